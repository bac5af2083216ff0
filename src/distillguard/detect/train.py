"""``train``: fit the signal weights and the operating threshold on labelled traffic.

Accounts and linked clusters are both training rows (a cluster is labelled extraction when most of
its members are); weights are non-negative (:func:`~distillguard.detect.scoring.fit`). The threshold is
then chosen on the *final* account scores (an account's score is the larger of its own and its
cluster's) so that at most ``target_fpr`` of benign accounts are flagged, with ``confidence``
(default 0.95) that the rate is within the target (:meth:`Threshold.allowed
<distillguard.detect.scoring.Threshold.allowed>`): about 12 of 20,000 training accounts for 1e-3, not
20, since a threshold set at exactly the target exceeds it on about half of new traffic. The online threshold is
chosen the same way on each benign account's *peak* score while the training traffic is replayed
through the online detector (an account flagged online stays flagged, so what counts is the highest
score it ever reaches, not its last).

With the online threshold comes the *early* model (:attr:`ScoreModel.early
<distillguard.detect.scoring.ScoreModel.early>`) that judges a linked cluster in its first day: weights
fitted on snapshots of every young cluster (:data:`~distillguard.detect.online.EARLY_SNAPSHOT_HOURS`)
without the signals that need days, and a bias set so that at the online threshold they flag only
benign accounts that the target rate still leaves room for (none, when the threshold uses it all).
The *first-day account* model (:attr:`ScoreModel.early_account
<distillguard.detect.scoring.ScoreModel.early_account>`) is made the same way on snapshots of single
accounts in their first day (at hours and at request counts of their own traffic), for the campaigns
whose accounts show what they are in their first requests but whose main weights wait for the signals
that need days; its bias is set after the young clusters', on the room they leave.
The shipped default model (``detect/default_model.json``) was made this way on simulated development seeds only.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from distillguard.detect.scan import KEEP_IN_MEMORY, analyse, final_scores, load_into
from distillguard.detect.scoring import ScoreModel, Threshold, fit, prior_weights, shape_knots
from distillguard.detect.signals import NEEDS_DAYS, SIGNALS
from distillguard.errors import InputError
from distillguard.ingest import EventStore, RejectWriter
from distillguard.workdir import work_dir


def _sources(traffic: list[Path], labels: Path | None, accounts: Path | None) -> list[tuple[list[Path], Path | None, Path]]:
    out = []
    dirs = [t for t in traffic if Path(t).is_dir()]
    files = [t for t in traffic if not Path(t).is_dir()]
    for d in dirs:
        d = Path(d)
        logs = sorted(d.glob("traffic*.jsonl*")) or sorted(d.glob("*.jsonl.gz"))
        if not logs or not (d / "labels.jsonl").exists():
            raise InputError(f"{d} has no traffic*.jsonl* and labels.jsonl; create it with `distillguard simulate --out {d}`")
        out.append((logs, d / "accounts.jsonl" if (d / "accounts.jsonl").exists() else None, d / "labels.jsonl"))
    if files:
        if labels is None:
            raise InputError("log files given without --labels")
        out.append((files, accounts, labels))
    return out


def _labels(path: Path) -> tuple[dict[str, int], dict[str, str]]:
    """(account → 1 extraction / 0 benign, account → campaign id or archetype for extraction accounts)."""
    from distillguard.bench.data import read_labels

    lab, camp = {}, {}
    for a, r in read_labels(path).items():
        lab[a] = 1 if r["label"] == "extraction" else 0
        if lab[a]:
            camp[a] = r.get("campaign_id") or r.get("archetype") or a
    return lab, camp


def collect(traffic: list[Path], *, labels: Path | None = None, accounts: Path | None = None):
    """Per source: the analysis and the labels (used by ``train`` and the benchmark)."""
    for logs, acc, lab in _sources(traffic, labels, accounts):
        work = work_dir("distillguard-train-")
        try:
            store = EventStore(":memory:", memory_limit="3GB", temp_directory=work, keep_in_memory=KEEP_IN_MEMORY)
            with RejectWriter(work / "rejected.jsonl") as rej:
                load_into(store, logs, rej, accounts=acc)
            an = analyse(store.con, has_accounts=acc is not None, for_attribution=False)
            store.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        yield (an, *_labels(lab))


def _replayed(traffic: list[Path], model: ScoreModel, *, labels: Path | None, accounts: Path | None,
              early_snapshots: bool = False):
    """Per source: the online detector after replaying it with ``model`` (nothing is flagged meanwhile),
    the labels and the campaigns."""
    from distillguard.detect.online import OnlineDetector
    from distillguard.detect.replay import replay_store
    from distillguard.ingest import accounts_by_id

    for logs, acc, lab_path in _sources(traffic, labels, accounts):
        lab, camp = _labels(lab_path)
        work = work_dir("distillguard-train-online-")
        try:
            store = EventStore(":memory:", memory_limit="3GB", temp_directory=work)
            with RejectWriter(work / "rejected.jsonl") as rej:
                load_into(store, logs, rej)
                info = accounts_by_id(acc, rejects=rej)
            det = OnlineDetector(accounts=info, model=model)
            det.threshold = math.inf  # record peaks only: no flags, no member propagation
            if early_snapshots:
                det.early_snapshots = []
                det.early_account_snapshots = []
            replay_store(store.con, det)
            store.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        yield det, lab, camp


def online_peaks(traffic: list[Path], model: ScoreModel, *, labels: Path | None = None, accounts: Path | None = None,
                 on_source: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(peak online score, peak score of its clusters in their first day, its peak score under the first-day
    account weights, label) of every account with traffic, replaying each source through
    :class:`~distillguard.detect.online.OnlineDetector` with ``model``."""
    peaks: list[float] = []
    early: list[float] = []
    early_own: list[float] = []
    ys: list[int] = []
    for k, (det, lab, _) in enumerate(_replayed(traffic, model, labels=labels, accounts=accounts)):
        early_of = det.early_peak_scores()
        early_own_of = det.early_account_peak_scores()
        for aid, peak in sorted(det.peak_scores().items()):
            peaks.append(peak)
            early.append(early_of[aid])
            early_own.append(early_own_of[aid])
            ys.append(lab.get(aid, 0))
        if on_source:
            on_source(k)
    return (np.asarray(peaks, dtype=np.float64), np.asarray(early, dtype=np.float64),
            np.asarray(early_own, dtype=np.float64), np.asarray(ys, dtype=np.int8))


#: Training rows: (strengths per signal, labels, the group each row counts for)
SnapshotRows = tuple[dict[str, np.ndarray], np.ndarray, list[str]]


def young_rows(traffic: list[Path], *, labels: Path | None = None, accounts: Path | None = None,
               on_source: Callable[[int], None] | None = None) -> tuple[SnapshotRows, SnapshotRows]:
    """Training rows of linked clusters, and of accounts, in their first hours, as the online detector
    judges them there: (strengths, labels, the group each row counts for: its campaign, or "benign") of
    young clusters at :data:`~distillguard.detect.online.EARLY_SNAPSHOT_HOURS` of their traffic (a
    cluster is extraction when most members are), and the same of accounts in their first day, also at
    their :data:`~distillguard.detect.online.EARLY_SNAPSHOT_REQUESTS`-th requests. The snapshots do not
    depend on the weights."""
    names = [s.name for s in SIGNALS]
    rows: dict[str, list[float]] = {n: [] for n in names}
    ys: list[float] = []
    groups: list[str] = []
    arows: dict[str, list[float]] = {n: [] for n in names}
    ays: list[float] = []
    agroups: list[str] = []
    for k, (det, lab, camp) in enumerate(_replayed(traffic, ScoreModel.default(), labels=labels, accounts=accounts,
                                                   early_snapshots=True)):
        for members, strs in det.early_snapshots or ():
            ext = [a for a in members if lab.get(a, 0)]
            y = len(ext) >= 0.5 * len(members)
            for n in names:
                rows[n].append(strs[n])
            ys.append(1.0 if y else 0.0)
            groups.append(f"{k}:{camp[ext[0]]}:young" if y else "benign")
        for aid, strs in det.early_account_snapshots or ():
            y = bool(lab.get(aid, 0))
            for n in names:
                arows[n].append(strs[n])
            ays.append(1.0 if y else 0.0)
            agroups.append(f"{k}:{camp[aid]}:young-account" if y else "benign")
        if on_source:
            on_source(k)
    return (({n: np.asarray(v, dtype=np.float64) for n, v in rows.items()}, np.asarray(ys), groups),
            ({n: np.asarray(v, dtype=np.float64) for n, v in arows.items()}, np.asarray(ays), agroups))


def _campaign_weights(groups: list[str]) -> np.ndarray:
    """Row weights: every campaign weighs the same, however many accounts (or snapshots) it spread over
    (else hydra clusters of hundreds of accounts would decide every weight); benign rows weigh 1 each
    (fit() then balances the two classes by their rows)."""
    counts: dict[str, int] = {}
    for x in groups:
        counts[x] = counts.get(x, 0) + 1
    return np.asarray([1.0 if x == "benign" else 1.0 / counts[x] for x in groups])


def training_row_weights(groups: list[str], benign_size: np.ndarray) -> np.ndarray:
    """Row weights of the main fit: every campaign weighs the same (:func:`_campaign_weights`), and a
    benign row weighs as many accounts as it stands for: a benign linked cluster (a company's accounts)
    counts once per member, because flagging it flags every one of them, as the threshold on final
    account scores counts them.

    >>> training_row_weights(["benign", "0:c1", "0:c1", "benign"], np.array([1.0, 1.0, 1.0, 6.0])).tolist()
    [1.0, 0.5, 0.5, 6.0]
    """
    base = _campaign_weights(groups)
    return np.where(np.asarray(groups) == "benign", base * np.asarray(benign_size, dtype=np.float64), base)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def train_model(traffic: list[Path], *, labels: Path | None = None, accounts: Path | None = None,
                target_fpr: float = 1e-3, online: bool = True, early_accounts: bool = True, exclude: frozenset[str] | set[str] = frozenset(),
                shapes: bool = True, confidence: float | None = 0.95, progress: bool = False) -> tuple[ScoreModel, str]:
    from contextlib import nullcontext

    from distillguard.progress import count_progress

    n_sources = len(_sources(traffic, labels, accounts))
    steps = n_sources * (3 if online else 1)
    with count_progress(steps, "train") if progress else nullcontext(lambda *a, **k: None) as advance:
        return _train(traffic, labels=labels, accounts=accounts, target_fpr=target_fpr, online=online,
                      early_accounts=early_accounts, exclude=exclude,
                      shapes=shapes, confidence=confidence, advance=lambda step: advance(1, step))


def _train(traffic: list[Path], *, labels: Path | None, accounts: Path | None, target_fpr: float, online: bool,
           early_accounts: bool,
           exclude: frozenset[str] | set[str], shapes: bool, advance: Callable[[str], None],
           confidence: float | None) -> tuple[ScoreModel, str]:
    names = [s.name for s in SIGNALS]
    feature_names = sorted({s.feature for s in SIGNALS} | {"requests"})
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    frows: dict[str, list[np.ndarray]] = {f: [] for f in feature_names}  # the same rows' features (for shapes)
    account_feats: dict[str, list[np.ndarray]] = {f: [] for f in feature_names}  # accounts only (for the knots)
    ys: list[np.ndarray] = []
    groups: list[list[str]] = []  # what each row counts for: a campaign (extraction) or "benign"
    benign_size: list[np.ndarray] = []  # accounts a benign row stands for (a benign cluster: its members)
    analyses = []
    for k, (an, lab, camp) in enumerate(collect(traffic, labels=labels, accounts=accounts)):
        y = np.asarray([lab.get(a, 0) for a in an.account_ids], dtype=np.float64)
        for n in names:
            rows[n].append(np.asarray(an.strs[n]))
        for f in feature_names:
            frows[f].append(np.asarray(an.feats[f], dtype=np.float64))
            account_feats[f].append(frows[f][-1])
        ys.append(y)
        groups.append([f"{k}:{camp[a]}" if lab.get(a, 0) else "benign" for a in an.account_ids])
        benign_size.append(np.ones(len(an.account_ids)))
        if an.cluster_ids:
            cy, cg = [], []
            for c in an.cluster_ids:
                ext = [a for a in an.members[c] if lab.get(a, 0)]
                cy.append(1.0 if len(ext) >= 0.5 * len(an.members[c]) else 0.0)
                cg.append(f"{k}:{camp[ext[0]]}" if cy[-1] else "benign")
            for n in names:
                rows[n].append(np.asarray(an.cstrs[n]))
            for f in feature_names:
                frows[f].append(np.asarray(an.cfeats[f], dtype=np.float64))
            ys.append(np.asarray(cy))
            groups.append(cg)
            benign_size.append(np.asarray([1.0 if yc else float(len(an.members[c])) for c, yc in zip(an.cluster_ids, cy)]))
        analyses.append((an, y))
        advance(f"features of source {k + 1}")
    if not ys:
        raise InputError("no labelled traffic to train on")
    X = {n: np.concatenate(rows[n]) for n in names}
    y = np.concatenate(ys)
    if y.sum() == 0 or y.sum() == len(y):
        raise InputError("training needs both benign and extraction accounts")
    knots = None
    if shapes:
        # each signal may learn a monotone shape from ramps at quantiles of its feature over the training accounts
        knots = shape_knots({f: np.concatenate(v) for f, v in account_feats.items()}, exclude=exclude)
    row_weights = training_row_weights([x for grp in groups for x in grp], np.concatenate(benign_size))
    model = fit(X, y, target_fpr=target_fpr, sample_weight=row_weights,
                prior=prior_weights(), exclude=exclude, feature_rows={f: np.concatenate(v) for f, v in frows.items()},
                knots=knots)
    # threshold on final account scores (own or cluster), benign accounts only
    # (clusters at most their members' score: at the threshold chosen, what the members gate flags)
    finals = [final_scores(an, model, members_gate=math.inf)[2] for an, _ in analyses]
    model.threshold = Threshold.for_fpr(np.concatenate([f[ya == 0] for f, (_, ya) in zip(finals, analyses)]), target_fpr, confidence)
    # report recall on the training data (not an evaluation: see `distillguard bench detect`)
    tp = fp = pos = neg = 0
    for final, (_, ya) in zip(finals, analyses):
        flags = model.threshold.flag(final)
        tp += int((flags & (ya == 1)).sum())
        fp += int((flags & (ya == 0)).sum())
        pos += int((ya == 1).sum())
        neg += int((ya == 0).sum())
    model.meta = {"trained_on": [str(t) for t in traffic], "accounts": pos + neg, "extraction_accounts": pos,
                  "train_recall": tp / max(pos, 1), "train_fpr": fp / max(neg, 1), "target_fpr": target_fpr,
                  "threshold_confidence": confidence,
                  **({"excluded_signals": sorted(exclude)} if exclude else {}),
                  **({"shaped_signals": sorted(model.shapes)} if model.shapes else {})}
    online_line = ""
    if online:
        # linked clusters in their first day get their own weights, fitted on snapshots of young clusters
        # as the online detector sees them (a gateway must act in a campaign's first hours, when the
        # signals that need days say nothing yet)
        (yrows, yy, ygroups), (arows, ay, agroups) = young_rows(
            traffic, labels=labels, accounts=accounts, on_source=lambda k: advance(f"young clusters and accounts of source {k + 1}"))
        early_prior = {k: (0.0 if k in NEEDS_DAYS else v) for k, v in prior_weights().items()}
        early = None
        if 0 < yy.sum() < len(yy):
            early = fit(yrows, yy, target_fpr=target_fpr, sample_weight=_campaign_weights(ygroups),
                        prior=early_prior, exclude=set(exclude) | NEEDS_DAYS)
            model.early = early
        early_account = None
        if early_accounts and 0 < ay.sum() < len(ay):
            early_account = fit(arows, ay, target_fpr=target_fpr, sample_weight=_campaign_weights(agroups),
                                prior=early_prior, exclude=set(exclude) | NEEDS_DAYS)
            model.early_account = early_account
        peaks, early_peaks, early_own_peaks, yp = online_peaks(traffic, model, labels=labels, accounts=accounts,
                                                               on_source=lambda k: advance(f"online replay of source {k + 1}"))
        ben = yp == 0
        model.online_threshold = Threshold.for_fpr(peaks[ben], target_fpr, confidence)
        t_main = model.online_threshold.value
        early_line = ""
        # the first-day weights may flag only benign accounts that the threshold leaves within the target
        # rate: their bias moves so that the online threshold is that point on their scale (young clusters'
        # weights first, then accounts', each never below 0.5 on its own scale: they flag nothing that their
        # own fit calls more likely benign)
        room = max(Threshold.allowed(int(ben.sum()), target_fpr, confidence) - int((peaks[ben] >= t_main).sum()), 0)
        free = ben & (peaks < t_main)  # benign accounts the main weights leave unflagged
        for weights, early_of, what, n_rows, keys in (
                (early, early_peaks, "young clusters", len(yy), ("young_cluster_rows", "early_raw_threshold")),
                (early_account, early_own_peaks, "young accounts", len(ay), ("young_account_rows", "early_account_raw_threshold"))):
            if weights is None:
                continue
            rest = np.sort(early_of[free])[::-1]
            t_raw = float(np.nextafter(rest[room], np.inf)) if room < len(rest) else 0.0
            t_raw = min(max(t_raw, 0.5), 1.0 - 1e-12)
            weights.bias += _logit(t_main) - _logit(t_raw)
            taken = free & (early_of >= t_raw)
            room = max(room - int(taken.sum()), 0)
            free = free & ~taken
            model.meta.update({keys[0]: n_rows, keys[1]: t_raw})
            early_line += (f"; {what} ({n_rows:,} snapshots): weights "
                           + ", ".join(f"{k}={v:.2f}" for k, v in sorted(weights.weights.items(), key=lambda kv: -kv[1]) if v > 0.01)
                           + f"; bias {weights.bias:.2f}")
        at_batch = float((peaks[ben] >= model.threshold.value).mean()) if ben.any() else 0.0
        online_recall = float((peaks[yp == 1] >= t_main).mean()) if (yp == 1).any() else 0.0
        online_fpr = float((peaks[ben] >= t_main).mean()) if ben.any() else 0.0
        model.meta.update({"online_benign_fpr_at_batch_threshold": at_batch, "online_train_recall": online_recall,
                           "online_train_fpr": online_fpr})
        online_line = (f"\nonline threshold {t_main:.4f} (at the batch threshold, {at_batch:.5f} of benign "
                       f"accounts would be flagged at some moment of a replay); online recall on the training traffic "
                       f"{online_recall:.3f}, benign FPR {online_fpr:.5f} (own and grown clusters' scores)" + early_line)
    weights = ", ".join(f"{k}={v:.2f}" for k, v in sorted(model.weights.items(), key=lambda kv: -kv[1]) if v > 0.01)
    report = (f"trained on {pos + neg:,} accounts ({pos:,} extraction); threshold {model.threshold.value:.4f} for benign FPR <= {target_fpr:g}"
              + (f" with {confidence:g} confidence" if confidence else "") + "\n"
              f"on the training traffic: recall {tp / max(pos, 1):.3f}, FPR {fp / max(neg, 1):.5f} (evaluate on other seeds with `distillguard bench detect`)\n"
              f"weights: {weights}; bias {model.bias:.2f}" + online_line)
    return model, report
