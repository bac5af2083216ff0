"""Young linked clusters: judged online without the signals that need days, and the account-farm signal."""

from __future__ import annotations

import random

from distillguard.detect.online import EARLY_MIN_ACCOUNTS, EARLY_SNAPSHOT_HOURS, OnlineDetector
from distillguard.detect.scoring import ScoreModel
from distillguard.detect.signals import NEEDS_DAYS, SIGNALS_BY_NAME, strengths_scalar
from distillguard.features.stats import AccountStats, features_scalar
from distillguard.schema import event_from_record

T0 = 1_772_409_600.0


def _farm(n_accounts: int, hours: float, *, created_before_s: float = 3600.0, seed: int = 0):
    """``n_accounts`` accounts on one payment card, created just before use, each sending a request
    every few minutes for ``hours``; returns (account facts, events in time order)."""
    rng = random.Random(seed)
    info = {f"farm-{i}": {"payment_fingerprint": "pm_shared", "created_at": T0 - created_before_s, "verified": False}
            for i in range(n_accounts)}
    events = []
    for i, aid in enumerate(info):
        t = T0 + 60.0 * i
        while t < T0 + hours * 3600.0:
            events.append(event_from_record({
                "request_id": f"{aid}-{len(events)}", "timestamp": t, "account_id": aid,
                "endpoint": "/v1/chat/completions", "model": "m-1",
                "request": {"messages": [{"role": "user", "content": f"Explain topic {rng.randrange(10 ** 6)} in detail."}]},
            }))
            t += rng.uniform(300.0, 900.0)
    events.sort(key=lambda e: e["ts"])
    return info, events


def _model() -> ScoreModel:
    m = ScoreModel.default()
    m.weights = {**m.weights, "account_farm": 4.0, "high_volume": 5.0, "flat_daily_profile": 4.0}
    m.early = None  # the main weights without the day-long signals (see ScoreModel.early_model)
    return m


def _strengths_without(m: ScoreModel, s: AccountStats, names) -> dict[str, float]:
    strs = m.strengths_scalar(features_scalar(s))  # the model's strengths (its learned shapes, if any)
    return {k: (0.0 if k in names else v) for k, v in strs.items()}


def test_the_early_model_leaves_out_the_signals_that_need_days_exactly():
    m = _model()
    info, events = _farm(1, 30.0)
    det = OnlineDetector(accounts=info, model=m, linkage=False)
    for ev in events:
        det.process(ev)
    s = det.account_state("farm-0").stats
    early = m.early_model()
    assert early.stats_scorer()(s) == m.score_scalar(_strengths_without(m, s, NEEDS_DAYS))
    assert m.stats_scorer()(s) == m.score_scalar(_strengths_without(m, s, ()))
    assert m.stats_scorer()(s) != early.stats_scorer()(s)  # the day-long signals count here
    # fitted early weights, when the model has them, are used as they are
    m.early = type(m)(weights={"account_farm": 9.0}, bias=-3.0)
    assert m.early_model() is m.early and m.early_model().stats_scorer()(s) == m.early.score_scalar(strengths_scalar(features_scalar(s)))


def test_a_young_cluster_is_judged_without_the_signals_that_need_days_then_on_all():
    m = _model()
    info, events = _farm(30, 30.0)
    det = OnlineDetector(accounts=info, model=m, rescore_every=0.0)
    det.threshold = float("inf")
    small = young = old = 0
    for ev in events:
        v = det.process(ev)
        cs = det.cluster_stats(v.account_id)
        if cs is None:
            continue
        if cs.t1 - cs.t0 < det.cluster_min_span_s and len(det.linker.members(v.account_id)) < EARLY_MIN_ACCOUNTS:
            assert v.cluster_score == 0.0  # a small group's first day: not judged yet
            small += 1
        elif cs.t1 - cs.t0 < det.cluster_min_span_s:
            assert v.cluster_score == m.early_model().score_scalar(_strengths_without(m, cs, NEEDS_DAYS))
            young += 1
        else:  # at most what the members' own requests look like, unless those reach the batch threshold
            combined, members = m.score_scalar(_strengths_without(m, cs, ())), det.members_score(v.account_id)
            assert v.cluster_score == (combined if members >= m.threshold.value else min(combined, members))
            old += 1
    assert small > 3 and young > 100 and old > 100


def test_thirty_fresh_accounts_on_one_card_are_an_account_farm_and_three_are_not():
    m = _model()
    for n, farm in ((30, True), (3, False)):
        info, events = _farm(n, 3.0)
        det = OnlineDetector(accounts=info, model=m, rescore_every=0.0)
        det.threshold = float("inf")
        for ev in events:
            det.process(ev)
        feats = features_scalar(det.cluster_stats("farm-0"))
        strength = strengths_scalar(feats)["account_farm"]
        assert feats["young_accounts"] == n
        assert (strength > 0.5) is farm and (strength == 0.0) is (not farm)
    # old accounts on one card are not a farm, however many
    info, events = _farm(30, 3.0, created_before_s=400 * 86400.0)
    det = OnlineDetector(accounts=info, model=m)
    for ev in events:
        det.process(ev)
    assert features_scalar(det.cluster_stats("farm-0"))["young_accounts"] == 0
    assert SIGNALS_BY_NAME["account_farm"].feature == "young_accounts"


def test_an_account_farm_is_flagged_in_its_first_hours_online():
    m = _model()
    info, events = _farm(40, 6.0)
    probe = OnlineDetector(accounts=info, model=m, rescore_every=0.0)
    probe.threshold = float("inf")
    for ev in events:
        probe.process(ev)
    peak = max(probe.early_peak_scores().values())  # the cluster never grows past its first day
    assert max(probe.peak_scores().values()) < peak
    alone = OnlineDetector(accounts=info, model=m, rescore_every=0.0, linkage=False)
    alone.threshold = float("inf")
    for ev in events:
        alone.process(ev)
    own_peak = max(alone.peak_scores().values())
    assert peak > own_peak + 0.1  # the group, not any one account, is what scores
    m.online_threshold = type(m.threshold)(value=(peak + own_peak) / 2)
    det = OnlineDetector(accounts=info, model=m, rescore_every=0.0)
    for ev in events:
        det.process(ev)
    flagged = det.flagged_accounts()
    assert len(flagged) == 40
    first = min(flagged.values(), key=lambda s: s.flagged_at)
    assert first.flagged_at < T0 + 6 * 3600  # the whole log; a cluster waited 24 hours before
    assert first.flag_reasons[0]["signal"] == "linked_cluster" and "first" in first.flag_reasons[0]["detail"]


def test_snapshots_of_young_clusters_for_training():
    info, events = _farm(10, 30.0)
    det = OnlineDetector(accounts=info, rescore_every=0.0)
    det.threshold = float("inf")
    det.early_snapshots = []
    for ev in events:
        det.process(ev)
    snaps = det.early_snapshots
    assert len(snaps) == len(EARLY_SNAPSHOT_HOURS)  # one cluster, one snapshot at each span
    for members, strs in snaps:
        assert set(members) <= set(info) and len(members) >= 2
        assert all(strs[name] == 0.0 for name in NEEDS_DAYS)
    assert len(snaps[-1][0]) == 10
