"""The online threshold: chosen on peak online scores, stored with the model, used by the online detector."""

from __future__ import annotations

import dataclasses
import random

import pytest

from distillguard.detect.online import OnlineDetector
from distillguard.detect.scoring import ScoreModel, Threshold
from distillguard.schema import event_from_record

T0 = 1_772_409_600.0


def _cot_events(account: str, n: int, *, every: int, start: int = 0) -> list[dict]:
    """``n`` single-turn requests at irregular times, one in ``every`` of them eliciting a chain of thought."""
    rng = random.Random(start)
    out = []
    t = T0 + 90.0 * start
    for i in range(start, start + n):
        t += rng.expovariate(1 / 90.0)
        text = f"Question {i}: what is {i} squared?" + (" Think step by step and show your full reasoning." if i % every == 0 else "")
        out.append(event_from_record({
            "request_id": f"{account}-{i}", "timestamp": t, "account_id": account,
            "endpoint": "/v1/chat/completions", "model": "m-1",
            "request": {"messages": [{"role": "user", "content": text}]},
        }))
    return out


def test_model_json_keeps_the_online_threshold(tmp_path):
    m = ScoreModel.default()
    m.online_threshold = Threshold(value=0.75)
    m.save(tmp_path / "m.json")
    back = ScoreModel.load(tmp_path / "m.json")
    assert back.online.value == 0.75 and back.threshold.value == m.threshold.value
    m.online_threshold = None  # an older model file: the online detector uses the batch threshold
    m.save(tmp_path / "old.json")
    old = ScoreModel.load(tmp_path / "old.json")
    assert old.online_threshold is None and old.online.value == m.threshold.value


def test_peak_score_is_the_highest_score_seen_and_survives_a_drop():
    # a model of reasoning elicitation alone (the shipped one also weighs this script's all-day, single-turn
    # timing, which does not drop)
    det = OnlineDetector(linkage=False, rescore_every=0.0, model=ScoreModel(weights={"cot_elicitation": 8.0}, bias=-5.0))
    det.threshold = float("inf")
    scores = []
    # every request elicits reasoning at first, then none: the score rises, then falls back
    for ev in _cot_events("acct", 60, every=1) + _cot_events("acct", 400, every=10 ** 9, start=60):
        scores.append(det.process(ev).score)
    st = det.account_state("acct")
    assert st.peak_score == max(scores) and st.peak_score > scores[-1] + 0.05
    assert not det.flagged_accounts()


def test_the_online_detector_flags_at_the_online_threshold():
    events = _cot_events("acct", 300, every=1)
    probe = OnlineDetector(linkage=False, rescore_every=0.0)
    probe.threshold = float("inf")
    for ev in events:
        probe.process(ev)
    peak = probe.account_state("acct").peak_score
    base = ScoreModel.default()
    assert peak > 0.1
    below = dataclasses.replace(base, threshold=Threshold(value=peak * 0.5), online_threshold=Threshold(value=min(1.0, peak * 1.001 + 1e-9)))
    above = dataclasses.replace(base, threshold=Threshold(value=min(1.0, peak * 1.001 + 1e-9)), online_threshold=Threshold(value=peak * 0.5))
    for model, flagged in ((below, False), (above, True)):
        det = OnlineDetector(linkage=False, rescore_every=0.0, model=model)
        for ev in events:
            det.process(ev)
        assert det.is_flagged("acct") is flagged
        assert det.threshold == model.online.value


@pytest.mark.parametrize("value", [-0.1, 1.1])
def test_online_threshold_is_validated(value):
    with pytest.raises(Exception):
        ScoreModel.from_json({**ScoreModel.default().to_json(), "online_threshold": value})
