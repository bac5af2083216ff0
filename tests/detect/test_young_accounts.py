"""Accounts in their first day: judged online by the first-day weights too (ScoreModel.early_account)."""

from __future__ import annotations

import pytest

from distillguard.detect.online import EARLY_SNAPSHOT_HOURS, EARLY_SNAPSHOT_REQUESTS, OnlineDetector
from distillguard.detect.scoring import ScoreModel
from distillguard.detect.signals import NEEDS_DAYS
from distillguard.schema import event_from_record

T0 = 1_772_409_600.0


def _events(aid: str, times: list[float], *, cot_from: float = 0.0) -> list[dict]:
    """One single-turn request of ``aid`` at each time (seconds after T0); from ``cot_from`` on, each asks
    for the model's chain of thought."""
    return [event_from_record({
        "request_id": f"{aid}-{i}", "timestamp": T0 + t, "account_id": aid, "endpoint": "/v1/chat/completions",
        "model": "m-1", "request": {"messages": [{"role": "user", "content": (
            f"Question {i}: think step by step and show your full chain of thought." if t >= cot_from
            else f"Question {i}: what is the capital of country number {i}?")}]},
    }) for i, t in enumerate(times)]


def _model(*, early_account: bool = True) -> ScoreModel:
    """Main weights that cannot flag anything; first-day weights that flag chain-of-thought elicitation."""
    m = ScoreModel(weights={"cot_elicitation": 1.0}, bias=-50.0)
    if early_account:
        m.early_account = ScoreModel(weights={"cot_elicitation": 12.0}, bias=-6.0)
    return m


def _run(model: ScoreModel, events: list[dict]) -> tuple[OnlineDetector, list]:
    det = OnlineDetector(model=model, linkage=False)
    return det, [det.process(ev) for ev in events]


def test_a_young_account_is_flagged_by_the_first_day_weights_with_their_reasons():
    events = _events("a", [600.0 * i for i in range(40)])  # 40 requests in its first 6.5 hours
    det, verdicts = _run(_model(), events)
    first = next(i for i, v in enumerate(verdicts) if v.flagged)
    v = verdicts[first]
    assert v.newly_flagged and v.score >= det.threshold
    assert [r["signal"] for r in v.reasons][:1] == ["cot_elicitation"]
    # flagged once the elicitation is strong enough under the small-traffic discount, not at once
    assert 0 < first < 20
    st = det.account_state("a")
    assert st.requests_before_flag == first and st.peak_early_own >= det.threshold
    # without first-day weights the same traffic is not flagged (the main weights cannot)
    _, plain = _run(_model(early_account=False), events)
    assert not any(v.flagged for v in plain)


def test_the_first_day_weights_stop_counting_after_the_first_day():
    # quiet, plain questions for 25 hours, then elicitation: only the main weights judge it by then
    times = [3600.0 * h for h in range(26)] + [25 * 3600.0 + 60.0 * i for i in range(1, 40)]
    events = _events("b", times, cot_from=25 * 3600.0 + 1.0)
    det, verdicts = _run(_model(), events)
    assert not any(v.flagged for v in verdicts)
    assert det.account_state("b").early_score == 0.0
    # the same elicitation inside its first day is flagged
    det, verdicts = _run(_model(), _events("c", [60.0 * i for i in range(40)]))
    assert any(v.flagged for v in verdicts)


def test_train_snapshots_of_young_accounts():
    # an account busy for 14 hours: snapshots at 1, 3, 6, 12 h and at its 10th, 30th and 100th request
    events = _events("d", [240.0 * i for i in range(210)])  # one request every 4 minutes
    det = OnlineDetector(model=_model(early_account=False), linkage=False)
    det.early_account_snapshots = []
    for ev in events:
        det.process(ev)
    snaps = det.early_account_snapshots
    assert len(snaps) == len(EARLY_SNAPSHOT_HOURS) + len(EARLY_SNAPSHOT_REQUESTS)
    assert all(aid == "d" for aid, _ in snaps)
    assert all(strs[name] == 0.0 for _, strs in snaps for name in NEEDS_DAYS)
    # the elicitation strength grows with the requests behind it (the small-traffic discount)
    cot = [strs["cot_elicitation"] for _, strs in snaps]
    assert cot[0] < cot[-1] == pytest.approx(1.0)
    # nothing after the first day
    late = _events("e", [0.0, 25 * 3600.0] + [25 * 3600.0 + 60.0 * i for i in range(1, 40)])
    det.early_account_snapshots = []
    for ev in late:
        det.process(ev)
    assert det.early_account_snapshots == []


def test_model_files_keep_the_first_day_weights(tmp_path):
    m = _model()
    m.save(tmp_path / "m.json")
    back = ScoreModel.load(tmp_path / "m.json")
    assert back.early_account is not None
    assert back.early_account.weights == m.early_account.weights and back.early_account.bias == m.early_account.bias


def test_the_shared_scorer_gives_each_models_own_score_exactly():
    """The online hot path scores the main and the first-day weights in one generated pass over the
    features; each must equal its model's plain score, float for float."""
    from distillguard.features.stats import features_scalar

    main = ScoreModel.default()
    early = main.early_account
    assert early is not None  # the shipped model has first-day weights
    events = _events("f", [300.0 * i for i in range(60)], cot_from=6000.0)
    det = OnlineDetector(model=main, linkage=False)
    both = main.stats_scorer(undiscounted=True, also=early)
    for ev in events:
        det.process(ev)
        s = det.account_state("f").stats
        feats = features_scalar(s)
        score, own, e = both(s, True)
        assert score == main.score_scalar(main.strengths_scalar(feats))
        assert own == main.score_scalar(main.strengths_scalar(feats, discount=False))
        assert e == early.score_scalar(early.strengths_scalar(feats))
        assert both(s, False)[2] == 0.0 and both(s, False)[:2] == (score, own)
        assert main.stats_scorer(undiscounted=True)(s) == (score, own)


def test_the_first_day_weights_stay_out_of_the_peak_the_online_threshold_is_chosen_on():
    # "x" has been busy for two days when "y", on the same card, starts eliciting chain of thought: the
    # cluster is past its first day, "y" is in its own, and only the first-day weights can flag it
    accounts = {a: {"payment_fingerprint": "card-1", "created_at": T0 - 86400.0} for a in ("x", "y")}
    det = OnlineDetector(model=_model(), accounts=accounts)
    events = _events("x", [3600.0 * h for h in range(50)], cot_from=1e9)
    events += _events("y", [50 * 3600.0 + 60.0 * i for i in range(40)])
    for ev in sorted(events, key=lambda e: e["ts"]):
        det.process(ev)
    y = det.account_state("y")
    assert det.members_score("y") is not None  # linked into the two-day-old cluster
    assert y.flagged_at is not None and y.peak_early_own >= det.threshold
    # the peak (what train sets the online threshold on) is the main weights', which cannot flag
    assert y.peak_score < 0.01
