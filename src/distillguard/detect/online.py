"""The online detector: the same features, signals, scores and threshold as ``scan``, one request at a time.

Used by the gateway, the LiteLLM plugin and ``replay`` (the same code in all three). Per account it
keeps :class:`~distillguard.features.stats.AccountStats` (bounded: counters, a 24-bin histogram, KMV
sketches of 128 hashes, small capped sets); per linked cluster it keeps the merge of its members'
stats, updated with each member request, so a cluster is scored on its combined behaviour exactly as
in batch, and a running sum of its members' requests times their undiscounted scores, for the members'
gate of :func:`~distillguard.detect.scan.cluster_scores`. Links come from
:class:`~distillguard.linkage.online.OnlineLinker`. In their first day, linked clusters and single
accounts are also judged by weights fitted for that day (``scan``, which sees whole logs, does not use
them; see :class:`OnlineDetector`).

Interface::

    det = OnlineDetector(accounts={"acct": {"payment_fingerprint": "...", "created_at": 1.7e9}})
    v = det.process(event)          # event: dict from schema.event_from_record()
    v.account_id, v.score, v.flagged, v.cluster_id, v.reasons

>>> from distillguard.schema import event_from_record
>>> det = OnlineDetector()
>>> v = det.process(event_from_record({"request_id": "r1", "timestamp": 0, "account_id": "a",
...     "endpoint": "/v1/chat/completions", "request": {"messages": [{"role": "user", "content": "hi"}]}}))
>>> v.flagged, 0.0 <= v.score <= 1.0
(False, True)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from distillguard.detect.scoring import ScoreModel
from distillguard.detect.signals import NEEDS_DAYS, strengths_scalar
from distillguard.features.derive import derive_one, words_of
from distillguard.features.pivot import ReleaseTracker
from distillguard.features.repeats import RepeatTracker
from distillguard.features.stats import KMV_K, WORDS_FIRST_N, AccountStats, features_scalar, kmv_estimate
from distillguard.linkage.graph import (
    FINGERPRINT_MAX_SIGNATURES,
    FINGERPRINT_MIN_REQUESTS,
    FREEMAIL,
    created_wave,
    fingerprint_weight,
    ip_prefix,
    template_key,
    ua_params_key,
)
from distillguard.linkage.online import OnlineLinker
from distillguard.linkage.sync import ActivitySignature

TEMPLATE_MAX_PREFIX_RATIO = 0.5
#: An account with no request for this long keeps its vocabulary (the words of its first prompts, until
#: its WORDS_FIRST_N-th) compacted: most accounts never reach that many requests, and their word sets
#: were the largest part of a small account's state.
WORDS_IDLE_S = 3600.0
#: ... checked every this many requests, or every WORDS_SWEEP_PER_ACCOUNT requests per account known
#: if more (each check is a pass over the accounts: its cost per request stays bounded).
WORDS_SWEEP_EVERY = 1 << 16
WORDS_SWEEP_PER_ACCOUNT = 8
#: What the gateway and the LiteLLM plugin pass as ``forget_idle_s``: a week without a request.
FORGET_IDLE_S = 7 * 86400.0
TEMPLATE_MIN_REQUESTS = 30
#: A linked cluster in its first day is judged (by the early weights) only with at least this many
#: accounts: a farm of fresh accounts, not a team's first hours (small clusters wait for their day).
EARLY_MIN_ACCOUNTS = 8
#: Spans (hours) of a young cluster's traffic at which ``train`` takes a snapshot of its strengths
#: (the rows it fits :attr:`ScoreModel.early <distillguard.detect.scoring.ScoreModel.early>` on).
EARLY_SNAPSHOT_HOURS = (1.0, 3.0, 6.0, 12.0)
#: ... and of an account in its first day (its own traffic's span), also at these counts of its requests
#: (an account whose first day is one burst has no hour to snapshot)
EARLY_SNAPSHOT_REQUESTS = (10, 30, 100)
_EARLY_SNAPSHOT_S = tuple(h * 3600.0 for h in EARLY_SNAPSHOT_HOURS)


def _marks_reached(marks: tuple[float, ...], value: float, k: int) -> int:
    """How many of the ascending ``marks`` ``value`` has reached, given that it had reached ``k`` of them."""
    while k < len(marks) and value >= marks[k]:
        k += 1
    return k


def _first_day_strengths(s: AccountStats) -> dict[str, float]:
    """Catalogue strengths of ``s`` without the signals that need days (a snapshot for the early weights)."""
    strs = strengths_scalar(features_scalar(s))
    for name in NEEDS_DAYS:
        strs[name] = 0.0
    return strs


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs 3x, and one is made per request
class Verdict:
    """The account's state after one request (a snapshot: the detector never changes it afterwards)."""

    account_id: str
    score: float
    flagged: bool
    cluster_id: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    cluster_score: float = 0.0
    newly_flagged: bool = False


@dataclass
class _Account:
    aid: str = ""
    stats: AccountStats = field(default_factory=AccountStats)
    score: float = 0.0
    own_requests_score: float = 0.0  # its score without the small-traffic discount (see scan.member_scores)
    peak_score: float = 0.0  # the highest score (own, or its cluster's after its first day) at any of its requests
    peak_early: float = 0.0  # the highest score of its cluster in the cluster's first day
    early_score: float = 0.0  # its score under the first-day weights (ScoreModel.early_account), in its first day
    peak_early_own: float = 0.0  # the highest of those
    snapshots_taken: tuple[int, int] = (0, 0)  # train's snapshots of it in its first day: (hour marks, request marks) passed
    next_score_at: int = 0
    first_pre: int | None = None
    templated: bool = False
    last_ip: str | None = None  # the client address of its latest request (already a key of the linker)
    flagged_at: float | None = None
    requests_before_flag: int | None = None
    flag_reasons: list[dict[str, Any]] = field(default_factory=list)
    flag_cluster: str | None = None
    # request fingerprint (see linkage.graph.request_fingerprint_sql): signatures seen, system prompts
    fsigs: set[str] = field(default_factory=set)
    sph_counts: dict[int, int] = field(default_factory=dict)
    fingerprint: tuple[int, tuple[str, ...]] | None = None
    next_fingerprint_at: int = FINGERPRINT_MIN_REQUESTS
    # activity windows for the synchronised-activity link (see linkage.sync)
    sync: ActivitySignature = field(default_factory=ActivitySignature)


class OnlineDetector:
    """Per-request detection with per-account and per-cluster state (see the module docstring)."""

    def __init__(self, *, accounts: dict[str, dict] | None = None, model: ScoreModel | None = None, linkage: bool = True,
                 rescore_every: float = 0.002, cluster_min_span_hours: float = 24.0, forget_idle_s: float | None = None):
        """``rescore_every``: once an account (or cluster) has more than ``1 / rescore_every`` requests, its
        score is recomputed every ``rescore_every * n`` requests instead of every request (stats are
        always updated); a flag can then come at most that fraction of its requests late. 0 rescores always.
        ``cluster_min_span_hours``: a linked cluster is judged on every signal only once its traffic spans
        this long, so that the first hours of a busy team's shared traffic are not mistaken for bulk
        volume; until then it is judged by the model's early weights (:meth:`ScoreModel.early_model`), which
        leave out the signals that need days (:data:`~distillguard.detect.signals.NEEDS_DAYS`) and were
        fitted on clusters in their first hours: a farm of fresh accounts shows in its first requests.
        A single account whose own traffic spans less than this is also judged by the model's first-day
        account weights (:attr:`ScoreModel.early_account`), when it has them: it is flagged when they or
        the main weights reach the threshold.
        ``forget_idle_s``: forget accounts idle this long that are neither flagged nor linked to another
        (:meth:`forget_idle`), at each sweep; None (``replay``, ``train``) keeps every account, so that a
        replay's result does not depend on when the sweeps fall."""
        self.model = model or ScoreModel.default()
        self.threshold = self.model.online.value
        self.members_gate = self.model.threshold.value  # see scan.cluster_scores
        self._scorer = self.model.stats_scorer()
        self._early_account = self.model.early_account
        # (score, own_requests_score[, score under the first-day weights if the second argument is true])
        self._account_scorer = self.model.stats_scorer(undiscounted=True, also=self._early_account)
        self._early_model = self.model.early_model()
        self._early_scorer = self._early_model.stats_scorer()
        #: ``train`` sets a list: (members, strengths) of young clusters at EARLY_SNAPSHOT_HOURS
        self.early_snapshots: list[tuple[list[str], dict[str, float]]] | None = None
        #: ... and one of (account, strengths) of accounts in their first day (see _account_snapshot)
        self.early_account_snapshots: list[tuple[str, dict[str, float]]] | None = None
        self._next_snapshot: dict[str, int] = {}
        self._scored_young: set[str] = set()  # clusters whose cached score is the early one
        #: flagged clusters (they stay flagged): (members when they were last flagged, score when first flagged)
        self._flagged_clusters: dict[str, tuple[int, float]] = {}
        self.accounts = accounts or {}
        self.linkage = linkage
        self._acc: dict[str, _Account] = {}
        self._cluster_stats: dict[str, AccountStats] = {}
        self._cluster_score: dict[str, float] = {}
        #: per cluster, the sum over its members of requests x own_requests_score: divided by the cluster's
        #: requests, the members' score that caps the cluster's (see scan.member_scores)
        self._cluster_members: dict[str, float] = {}
        self.linker = OnlineLinker(on_union=self._on_union)
        self.rescore_every = rescore_every
        self.cluster_min_span_s = cluster_min_span_hours * 3600.0
        self._next_cluster_score: dict[str, int] = {}
        # population counts behind the lift of request fingerprints: accounts with one, per system
        # prompt, per parameter signature
        self._fp_n = 0
        self._fp_sp: dict[int, int] = {}
        self._fp_sig: dict[str, int] = {}
        self._current: str | None = None
        self._current_included = False
        self.releases = ReleaseTracker()  # model releases seen so far (the model-pivot flags)
        self._until_sweep = WORDS_SWEEP_EVERY
        self.repeats = RepeatTracker()  # sampled prompts and who sent them (the shared-prompt flags)
        self.forget_idle_s = forget_idle_s
        self.forgotten = 0  # accounts forgotten so far

    # -- state ------------------------------------------------------------------------------
    def _side(self, root: str) -> AccountStats:
        cs = self._cluster_stats.pop(root, None)
        if cs is not None:
            return cs
        if root == self._current:
            self._current_included = True  # the account's own stats already hold this request
        return self._acc_stats(root)

    def _members_side(self, root: str) -> float:
        total = self._cluster_members.pop(root, None)
        if total is not None:
            return total
        st = self._acc.get(root)  # an account on its own: its requests so far at its last score
        return st.stats.n * st.own_requests_score if st is not None else 0.0

    def _on_union(self, root: str, other: str) -> None:
        self._cluster_members[root] = self._members_side(root) + self._members_side(other)
        a, b = self._side(root), self._side(other)
        self._cluster_stats[root] = a.merge(b)
        self._cluster_score.pop(other, None)
        self._cluster_score.pop(root, None)  # membership changed: rescore now
        self._scored_young.discard(other)
        self._next_snapshot.pop(other, None)
        self._next_cluster_score.pop(other, None)
        flagged = self._flagged_clusters.pop(other, None) or self._flagged_clusters.get(root)
        if flagged is not None:  # the union of a flagged cluster is flagged; 0 members: flag the newcomers
            self._flagged_clusters[root] = (0, flagged[1])

    def _acc_stats(self, account: str) -> AccountStats:
        st = self._acc.get(account)
        return st.stats if st is not None else AccountStats()

    def account_state(self, account_id: str) -> _Account | None:
        return self._acc.get(account_id)

    def cluster_stats(self, account_id: str) -> AccountStats | None:
        """The merged stats of the account's linked cluster (None when it is in none)."""
        if not self.linkage or account_id not in self._acc:
            return None
        return self._cluster_stats.get(self.linker.root(account_id))

    def members_score(self, account_id: str) -> float | None:
        """What the requests of the account's cluster's members look like (scan.member_scores: their own
        scores without the small-traffic discount, weighted by requests); None when it is in no cluster."""
        cs = self.cluster_stats(account_id)
        if cs is None:
            return None
        return self._members_score(self.linker.root(account_id), cs)

    def _members_score(self, root: str, cs: AccountStats) -> float:
        return self._cluster_members[root] / cs.n if cs.n else 0.0

    def is_flagged(self, account_id: str) -> bool:
        st = self._acc.get(account_id)
        return st is not None and st.flagged_at is not None

    # -- request fingerprints -----------------------------------------------------------------
    def _track_fingerprint(self, aid: str, st: _Account, d: dict[str, Any]) -> None:
        fsig, sph = d.get("fsig"), d.get("sph")
        if fsig is None:
            return
        if len(st.fsigs) <= FINGERPRINT_MAX_SIGNATURES:
            st.fsigs.add(fsig)
        c = st.sph_counts
        if sph in c or len(c) < 16:
            c[sph] = c.get(sph, 0) + 1
        if st.stats.n >= st.next_fingerprint_at:
            st.next_fingerprint_at = 2 * st.stats.n
            self._refresh_fingerprint(aid, st)

    def _count_fingerprint(self, fp: tuple[int, tuple[str, ...]], k: int) -> None:
        self._fp_n += k
        self._fp_sp[fp[0]] = self._fp_sp.get(fp[0], 0) + k
        for sig in fp[1]:
            self._fp_sig[sig] = self._fp_sig.get(sig, 0) + k

    def _refresh_fingerprint(self, aid: str, st: _Account) -> None:
        new = None
        if len(st.fsigs) <= FINGERPRINT_MAX_SIGNATURES and st.sph_counts:
            sp = max(st.sph_counts.items(), key=lambda kv: (kv[1], -kv[0]))[0]
            new = (sp, tuple(sorted(st.fsigs)))
        if new == st.fingerprint:
            return
        if st.fingerprint is not None:
            self._count_fingerprint(st.fingerprint, -1)
        st.fingerprint = new
        if new is None:
            return
        self._count_fingerprint(new, 1)
        value = hashlib.md5(f"{new[0]:016x}|{','.join(new[1])}".encode()).hexdigest()[:16]
        self.linker.add_key(aid, "request_fingerprint", value, weight_of=lambda m: fingerprint_weight(m, self._log2_expected(new)))

    def _log2_expected(self, fp: tuple[int, tuple[str, ...]]) -> float:
        """log2 of the accounts expected to share ``fp`` if its parts were chosen independently."""
        n = max(self._fp_n, 1)
        out = math.log2(n) + math.log2(max(self._fp_sp.get(fp[0], 1), 1) / n)
        for sig in fp[1]:
            out += math.log2(max(self._fp_sig.get(sig, 1), 1) / n)
        return out

    # -- the River-style interface ------------------------------------------------------------
    def learn_one(self, event: dict[str, Any]) -> None:
        self.process(event)

    def score_one(self, event: dict[str, Any]) -> float:
        st = self._acc.get(event["account_id"])
        return st.score if st is not None else 0.0

    def process(self, event: dict[str, Any]) -> Verdict:
        """Update the state with one event and return the account's verdict after it."""
        aid = event["account_id"]
        return self.process_derived(
            aid, event["ts"], derive_one(event), words_of(event.get("prompt")) if self.needs_words(aid) else None,
            client_ip=event.get("client_ip"), user_agent=event.get("user_agent"), model=event.get("model"),
        )

    def needs_words(self, account_id: str) -> bool:
        """Whether the account's next request counts towards its vocabulary (its first WORDS_FIRST_N do)."""
        st = self._acc.get(account_id)
        return st is None or st.stats.n < WORDS_FIRST_N

    def process_derived(self, aid: str, ts: float, d: dict[str, Any], words: list[str] | None, *,
                        client_ip: str | None = None, user_agent: str | None = None, model: str | None = None,
                        verdict: bool = True) -> Verdict | None:
        """:meth:`process` with the per-request derived values already computed (``replay`` does it in bulk).
        ``verdict=False``: return None instead of a :class:`Verdict` (``replay`` reads the state at the end)."""
        self._until_sweep -= 1
        if self._until_sweep <= 0:
            self.compact_idle(ts)
        st = self._acc.get(aid)
        new = st is None
        if new:
            st = self._acc[aid] = _Account(aid=aid, first_pre=d["pre"])
            st.stats.set_account(self.accounts.get(aid), ts)
        else:
            # the id as first seen: each request brings its own copy of the string, and the tables that
            # keep ids (linker holders and pairs, the shared-prompt tracker) would otherwise pin one each
            aid = st.aid
        d["post"], d["newm"] = self.releases.observe(ts, model)
        d["rpt"] = self.repeats.observe(d["ph"], aid) if d["rpt_n"] else False
        gap, dw, dd, eu_top = st.stats.update(ts, d, words)
        self._current, self._current_included = aid, False
        if self.linkage:
            lk = self.linker
            if new:
                info = self.accounts.get(aid) or {}
                lk.add_key(aid, "payment_fingerprint", info.get("payment_fingerprint"))
                lk.add_key(aid, "created_wave", created_wave(info.get("created_at")))
                dom = (info.get("email_domain") or "").lower() or None
                lk.add_key(aid, "email_domain", None if dom in FREEMAIL else dom)
                lk.add_key(aid, "user_agent_params", ua_params_key(user_agent, d["psig"]))
            if client_ip and client_ip != st.last_ip:  # most requests come from the address of the one before
                st.last_ip = client_ip
                if not lk.has_key(aid, "client_ip", client_ip):
                    lk.add_key(aid, "client_ip", client_ip)
                    lk.add_key(aid, "ip_prefix", ip_prefix(client_ip))
            self._track_fingerprint(aid, st, d)
            for v in st.sync.add(ts):
                lk.add_key(aid, "sync_timing", v)
            if not st.templated and st.stats.n >= TEMPLATE_MIN_REQUESTS:
                ratio = min(1.0, kmv_estimate(st.stats.kmv_pre, KMV_K["kmv_pre"]) / st.stats.n)
                if ratio <= TEMPLATE_MAX_PREFIX_RATIO:
                    st.templated = True
                    lk.add_key(aid, "template", template_key(st.first_pre))
        # account score (on a schedule for heavy accounts: see __init__); features and strengths for the
        # reasons only when the account is flagged
        n = st.stats.n
        own_before = st.own_requests_score
        if n >= st.next_score_at:
            if self._early_account is None:
                st.score, st.own_requests_score = self._account_scorer(st.stats)
            else:
                # an account in its first day is also judged by the first-day weights (0 after it)
                s = st.stats
                st.score, st.own_requests_score, st.early_score = self._account_scorer(s, s.t1 - s.t0 < self.cluster_min_span_s)
                if st.early_score > st.peak_early_own:
                    st.peak_early_own = st.early_score
            st.next_score_at = n + max(1, int(n * self.rescore_every))
        if self.early_account_snapshots is not None:
            self._account_snapshot(aid, st)
        # cluster score
        cid = None
        cscore = 0.0
        young = False
        if self.linkage:
            root = self.linker.root(aid)
            if root in self._cluster_stats:
                cs = self._cluster_stats[root]
                # this request (unless a union this request already counted it) and any change of its score
                self._cluster_members[root] += ((0.0 if self._current_included else own_before)
                                                + n * (st.own_requests_score - own_before))
                if not self._current_included:
                    cs.apply(ts, d, gap, dw, dd, eu_top)
                # a young cluster (see __init__) is scored by the early weights
                young = (cs.t1 - cs.t0) < self.cluster_min_span_s
                due = self._next_cluster_score.get(root, 0)
                if cs.n >= due or root not in self._cluster_score or (root in self._scored_young) != young:
                    if young:
                        self._cluster_score[root] = self._early_scorer(cs)
                        self._scored_young.add(root)
                    else:
                        self._cluster_score[root] = self._scorer(cs)
                        self._scored_young.discard(root)
                    self._next_cluster_score[root] = cs.n + max(1, int(cs.n * self.rescore_every))
                cscore = self._cluster_score[root]
                if not young:
                    # at most what its members' own requests look like, unless they look like extraction at
                    # the batch threshold (scan.cluster_scores): linkage and pooled volume alone never flag.
                    # (A young cluster is judged by the early weights, and only with EARLY_MIN_ACCOUNTS.)
                    members_score = self._members_score(root, cs)
                    if members_score < self.members_gate and members_score < cscore:
                        cscore = members_score
                cid = self.linker.cluster_of(aid)
                if young:
                    if self.early_snapshots is not None:
                        self._snapshot(aid, root, cs)
                    if cscore > st.peak_early:
                        st.peak_early = cscore  # any size: train sets the early bias above benign teams too
                    if len(self.linker.members(aid)) < EARLY_MIN_ACCOUNTS:
                        cscore = 0.0  # a small group in its first day (a team's first hours): not judged yet
        # the peak is what would flag it at any threshold, of its own and its grown cluster's scores under
        # the main weights (train chooses the online threshold on it; the first-day weights' peaks are
        # apart: train sets their biases on them, after that threshold)
        main = score = st.score
        own_flag = score >= self.threshold
        if st.early_score > score:
            score = st.early_score
            own_flag = own_flag or score >= self.threshold
        if cid is not None:
            if cscore > score:
                score = cscore
            if not young and cscore > main:
                main = cscore
        if main > st.peak_score:
            st.peak_score = main
        # a flagged cluster stays flagged, and so flags every account that joins it later (a campaign's
        # replacement accounts link to the old ones by payment, creation wave or script), whatever its
        # score after the join
        was_flagged = self._flagged_clusters.get(root) if cid is not None else None
        cluster_flagged = cid is not None and (cscore >= self.threshold or was_flagged is not None)
        flagged = own_flag or cluster_flagged
        newly = False
        linked = None
        if flagged and st.flagged_at is None:
            newly = True
            st.flagged_at = ts
            st.requests_before_flag = st.stats.n - 1
            st.flag_cluster = cid
            feats = features_scalar(st.stats)
            reasons = []
            if own_flag:  # by the main weights, or else by the first-day ones
                judge = self.model if st.score >= self.threshold else self._early_account
                reasons = [r.as_dict() for r in judge.reasons(judge.strengths_scalar(feats), feats)]  # type: ignore[union-attr]
            if cluster_flagged:
                linked = self._linked_reason(aid, cid, cs, cscore, young, was_flagged)
                reasons.insert(0 if not own_flag else len(reasons), linked)
            st.flag_reasons = reasons
        if cluster_flagged:
            members = self.linker.members(aid)
            if was_flagged is None or len(members) != was_flagged[0]:
                # every member of a flagged cluster is flagged: those in it now, and again whenever it grows
                # (a union can bring in accounts that send nothing more)
                self._flagged_clusters[root] = (len(members), cscore if was_flagged is None else was_flagged[1])
                for m in members:
                    ms = self._acc.get(m)
                    if ms is not None and ms.flagged_at is None and m != aid:
                        if linked is None:
                            linked = self._linked_reason(aid, cid, cs, cscore, young, was_flagged)
                        ms.flagged_at = ts
                        ms.requests_before_flag = ms.stats.n
                        ms.flag_cluster = cid
                        ms.flag_reasons = [linked]
        if not verdict:
            return None
        return Verdict(account_id=aid, score=score, flagged=st.flagged_at is not None, cluster_id=cid,
                       reasons=st.flag_reasons, cluster_score=cscore, newly_flagged=newly)

    def _linked_reason(self, aid: str, cid: str, cs: AccountStats, cscore: float, young: bool,
                       was_flagged: tuple[int, float] | None) -> dict[str, Any]:
        """The ``linked_cluster`` reason of a flagged cluster, with the reasons of the weights that scored it
        (the early ones give the day-long signals none)."""
        cfeats = features_scalar(cs)
        judge = self._early_model if young else self.model
        creasons = judge.reasons(judge.strengths_scalar(cfeats), cfeats, top=3)
        value = cscore
        when = ""
        if was_flagged is not None and cscore < self.threshold:
            value = was_flagged[1]
            when = f" scored {value:.3f} when the cluster was flagged (now {cscore:.3f})"
        members = self.members_score(aid)
        return {
            "signal": "linked_cluster", "value": round(value, 6),
            "detail": f"member of cluster {cid} ({len(self.linker.members(aid))} accounts); combined traffic"
                      + (f" of its first {(cs.t1 - cs.t0) / 3600:.1f} h" if young else "")
                      + (when or f" scores {cscore:.3f}")
                      + (f" (its members' own requests {members:.3f})" if members is not None else "") + ": "
                      + "; ".join(r.detail for r in creasons),
        }

    def _snapshot(self, aid: str, root: str, cs: AccountStats) -> None:
        k0 = self._next_snapshot.get(root, 0)
        k = _marks_reached(_EARLY_SNAPSHOT_S, cs.t1 - cs.t0, k0)
        if k == k0:
            return
        self._next_snapshot[root] = k
        assert self.early_snapshots is not None
        self.early_snapshots.append((list(self.linker.members(aid)), _first_day_strengths(cs)))

    def _account_snapshot(self, aid: str, st: _Account) -> None:
        """Train's rows for the first-day weights: the account's strengths at EARLY_SNAPSHOT_HOURS of its
        first day, and at its EARLY_SNAPSHOT_REQUESTS-th requests in it."""
        s = st.stats
        span = s.t1 - s.t0
        if span >= self.cluster_min_span_s:
            return
        kh0, kn0 = st.snapshots_taken
        taken = (_marks_reached(_EARLY_SNAPSHOT_S, span, kh0), _marks_reached(EARLY_SNAPSHOT_REQUESTS, s.n, kn0))
        if taken == st.snapshots_taken:
            return
        st.snapshots_taken = taken
        assert self.early_account_snapshots is not None
        self.early_account_snapshots.append((aid, _first_day_strengths(s)))

    def compact_idle(self, now: float) -> None:
        """Compact the vocabulary of every account idle for WORDS_IDLE_S at time ``now`` (see
        :meth:`AccountStats.compact_words`)."""
        self._until_sweep = max(WORDS_SWEEP_EVERY, WORDS_SWEEP_PER_ACCOUNT * len(self._acc))
        idle_since = now - WORDS_IDLE_S
        for st in self._acc.values():
            s = st.stats
            if s.last_ts is not None and s.last_ts <= idle_since:
                s.compact_words()  # only a live set of words is compacted
        if self.forget_idle_s is not None:
            self.forget_idle(now - self.forget_idle_s)

    def forget_idle(self, since: float) -> int:
        """Forget every account whose last request came before ``since`` and that is neither flagged nor
        linked to another account; returns how many.

        Per-account state grows with the accounts a gateway has ever seen (4-20 KiB each: counters,
        sketches, small sets), and most of them go quiet for good. An account that comes back starts
        afresh, as if new; the linker keeps its keys, so that it links again as before, and the
        population counts behind request-fingerprint lifts drop its fingerprint. Flagged accounts and
        members of clusters are kept: their history is evidence."""
        members = self.linker.members
        gone = [a for a, st in self._acc.items()
                if st.flagged_at is None and st.stats.t1 < since and len(members(a)) < 2]
        for a in gone:
            st = self._acc.pop(a)
            if st.fingerprint is not None:
                self._count_fingerprint(st.fingerprint, -1)
        self.forgotten += len(gone)
        return len(gone)

    def peak_scores(self) -> dict[str, float]:
        """Every account's highest score so far, own or of its cluster after the cluster's first day
        (what ``train`` chooses the online threshold on)."""
        return {a: s.peak_score for a, s in self._acc.items()}

    def early_account_peak_scores(self) -> dict[str, float]:
        """Every account's highest score under the first-day weights in its first day (what ``train`` sets
        their bias on)."""
        return {a: s.peak_early_own for a, s in self._acc.items()}

    def early_peak_scores(self) -> dict[str, float]:
        """Every account's highest score of a cluster it was in during the cluster's first day (what
        ``train`` sets the early weights' bias on)."""
        return {a: s.peak_early for a, s in self._acc.items()}

    def flagged_accounts(self) -> dict[str, _Account]:
        return {a: s for a, s in self._acc.items() if s.flagged_at is not None}
