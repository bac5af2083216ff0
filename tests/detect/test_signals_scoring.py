"""The signal catalogue, strengths, the score model and the threshold object."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distillguard.detect.scoring import ScoreModel, Shape, Threshold, fit, shape_knots
from distillguard.detect.signals import SIGNALS, SIGNALS_BY_NAME, catalogue, strengths, strengths_scalar
from distillguard.errors import ConfigError
from distillguard.features.stats import FEATURE_COLUMNS


def test_catalogue_ids_unique_and_complete():
    ids = [s.id for s in SIGNALS]
    names = [s.name for s in SIGNALS]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    for s in SIGNALS:
        assert s.feature in FEATURE_COLUMNS, s.name
        assert s.atlas and all(a.startswith("AML.T") for a in s.atlas)
        assert s.level in ("low", "medium", "high")
        assert s.description and s.analyst_note and s.falsepositives
        assert s.lo != s.hi
    assert {d["id"] for d in catalogue()} == set(ids) | {"DG-0100"}


def _feats(**over):
    base = {f: 0.0 for f in FEATURE_COLUMNS}
    base.update(requests=500.0, iat_cv=2.0, hour_entropy=0.5, prefix_distinct_ratio=1.0, sys_share=1.0, vocab_breadth=0.2)
    base.update(over)
    return base


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: s.name)
def test_each_signal_has_a_positive_and_a_negative_example(sig):
    neg = _feats()
    pos = _feats(**{sig.feature: sig.hi})
    assert strengths_scalar(pos)[sig.name] == pytest.approx(1.0)
    assert strengths_scalar(neg)[sig.name] == pytest.approx(0.0)
    # little traffic discounts the signal
    few = _feats(**{sig.feature: sig.hi, "requests": sig.min_requests / 4})
    assert strengths_scalar(few)[sig.name] == pytest.approx(0.25)


@pytest.mark.parametrize("value", [math.nan, -1e300, 1e300, 0.0])
def test_strengths_handle_missing_and_extreme_values(value):
    f = {k: value for k in FEATURE_COLUMNS}
    f["requests"] = 100.0
    s = strengths_scalar(f)
    v = strengths({k: np.asarray([x]) for k, x in f.items()})
    for k in s:
        assert 0.0 <= s[k] <= 1.0
        assert s[k] == pytest.approx(float(v[k][0]))


def test_threshold_for_fpr():
    benign = np.linspace(0, 1, 10_000)
    t = Threshold.for_fpr(benign, 1e-3)
    assert (benign >= t.value).mean() <= 1e-3
    assert (benign >= t.value).sum() == 10
    # with 95% confidence that the rate is within the target: fewer flags, as many as the bound allows
    from scipy.stats import beta

    sure = Threshold.for_fpr(benign, 1e-3, confidence=0.95)
    k = int((benign >= sure.value).sum())
    assert k < 10 and beta.ppf(0.95, k + 1, len(benign) - k) <= 1e-3 < beta.ppf(0.95, k + 2, len(benign) - k - 1)
    assert Threshold.for_fpr(benign[:100], 1e-3, confidence=0.95).value > benign[:100].max()  # too few to allow one
    with pytest.raises(ConfigError):
        Threshold(value=1.5)


def test_model_validation_and_roundtrip(tmp_path):
    with pytest.raises(ConfigError):
        ScoreModel(weights={"no_such_signal": 1.0}, bias=0.0)
    with pytest.raises(ConfigError):
        ScoreModel(weights={"cot_elicitation": -1.0}, bias=0.0)
    m = ScoreModel.default()
    m.save(tmp_path / "m.json")
    m2 = ScoreModel.load(tmp_path / "m.json")
    assert m2.weights == m.weights and m2.threshold.value == m.threshold.value and m2.shapes == m.shapes
    shaped = ScoreModel(weights={"single_turn": 2.0}, bias=-1.0, shapes={"single_turn": Shape(xs=(0.5, 0.9), ys=(0.0, 1.0))})
    shaped.save(tmp_path / "s.json")
    assert ScoreModel.load(tmp_path / "s.json").shapes == shaped.shapes
    with pytest.raises(ConfigError):
        ScoreModel(weights={}, bias=0.0, shapes={"no_such_signal": Shape(xs=(0.0, 1.0), ys=(0.0, 1.0))})
    with pytest.raises(ConfigError):
        Shape(xs=(1.0, 0.0), ys=(0.0, 1.0))
    with pytest.raises(ConfigError, match="catalogue's direction"):  # a shape may not let a feature lower a score
        ScoreModel(weights={"single_turn": 1.0}, bias=0.0, shapes={"single_turn": Shape(xs=(0.2, 0.5, 0.9), ys=(0.0, 1.0, 0.5))})
    with pytest.raises(ConfigError, match="catalogue's direction"):  # regular timing: low cv is suspicious
        ScoreModel(weights={}, bias=0.0, shapes={"regular_timing": Shape(xs=(0.3, 1.2), ys=(0.0, 1.0))})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError):
        ScoreModel.load(tmp_path / "bad.json")


def _separable(seed: int, n: int = 4000) -> tuple[dict[str, np.ndarray], np.ndarray, np.random.Generator]:
    """Noise strengths for every signal; cot_elicitation separates the 10% positives."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(float)
    X = {s.name: rng.random(n) * 0.2 for s in SIGNALS}
    X["cot_elicitation"] = np.where(y == 1, 0.8 + 0.2 * rng.random(n), 0.1 * rng.random(n))
    return X, y, rng


def test_fit_learns_a_separating_nonnegative_model():
    X, y, _ = _separable(0)
    m = fit(X, y, target_fpr=1e-3)
    assert all(w >= 0 for w in m.weights.values())
    assert max(m.weights, key=m.weights.get) == "cot_elicitation"
    flags = m.threshold.flag(m.score(X))
    assert flags[y == 1].mean() > 0.95 and flags[y == 0].mean() <= 1e-3


def test_fit_holds_excluded_signals_at_zero():
    X, y, rng = _separable(1)
    X["logprob_harvest"] = np.where(y == 1, 0.5 + 0.5 * rng.random(len(y)), 0.3 * rng.random(len(y)))
    m = fit(X, y, target_fpr=1e-3, exclude={"cot_elicitation"})
    assert m.weights["cot_elicitation"] == 0.0
    assert max(m.weights, key=m.weights.get) == "logprob_harvest"  # the next best separator takes over
    with pytest.raises(ConfigError, match="unknown signals"):
        fit(X, y, exclude={"no_such_signal"})


def _below_the_ramp(seed: int, n: int = 6000):
    """Accounts whose single-turn share separates the classes *below* the catalogue ramp's start (0.8):
    extraction at 0.70-0.78, benign at 0.2-0.6; every other signal is noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(float)
    feats = {f: np.full(n, np.nan) for f in FEATURE_COLUMNS}
    feats["requests"] = np.full(n, 500.0)
    feats["single_share"] = np.where(y == 1, 0.70 + 0.08 * rng.random(n), 0.2 + 0.4 * rng.random(n))
    feats["iat_cv"] = rng.uniform(0.5, 4.0, n)  # noise on a signal where low values are suspicious
    strs = strengths(feats)
    for name in strs:
        if name not in ("single_turn", "regular_timing"):
            strs[name] = rng.random(n) * 0.2
    return feats, strs, y


def test_fit_with_knots_learns_a_monotone_shape_where_the_catalogue_ramp_sees_nothing():
    feats, strs, y = _below_the_ramp(0)
    assert strs["single_turn"].max() == 0.0  # the catalogue ramp starts at 0.8
    plain = fit(strs, y, target_fpr=1e-3)
    assert plain.threshold.flag(plain.score(strs))[y == 1].mean() < 0.2
    knots = shape_knots(feats)
    m = fit(strs, y, target_fpr=1e-3, feature_rows=feats, knots=knots)
    assert "single_turn" in m.shapes and m.weights["single_turn"] > 0
    shaped = m.strengths(feats)
    flags = m.threshold.flag(m.score(shaped))
    assert flags[y == 1].mean() > 0.95 and flags[y == 0].mean() <= 1e-3
    sh = m.shapes["single_turn"]
    assert np.all(np.diff(sh.ys) >= -1e-12) and sh.ys[-1] == pytest.approx(1.0)  # rises with the share, to 1
    assert sh.scalar(0.3) < sh.scalar(0.75)
    # scalar and vectorised strengths agree, and the model scores through them online too
    for i in range(0, len(y), 997):
        one = {k: float(v[i]) for k, v in feats.items()}
        assert m.strengths_scalar(one)["single_turn"] == pytest.approx(float(shaped["single_turn"][i]))
    # a reason names where the learned shape reaches full strength, not the catalogue's 99%
    i = int(np.flatnonzero(y == 1)[0])
    one = {k: float(v[i]) for k, v in feats.items()}
    r = [x for x in m.reasons(m.strengths_scalar(one), one) if x.signal == "single_turn"]
    assert r and f"{sh.full_at:.0%}" in r[0].detail


def test_a_shape_keeps_the_catalogue_direction_for_signals_where_low_values_are_suspicious():
    rng = np.random.default_rng(3)
    n = 6000
    y = (rng.random(n) < 0.1).astype(float)
    feats = {f: np.full(n, np.nan) for f in FEATURE_COLUMNS}
    feats["requests"] = np.full(n, 500.0)
    # regular timing: extraction at cv 1.3-1.6 (above the catalogue's 1.2 start), benign at 2-5
    feats["iat_cv"] = np.where(y == 1, rng.uniform(1.3, 1.6, n), rng.uniform(2.0, 5.0, n))
    strs = {s.name: rng.random(n) * 0.2 for s in SIGNALS}
    strs["regular_timing"] = strengths(feats)["regular_timing"]
    m = fit(strs, y, target_fpr=1e-3, feature_rows=feats, knots=shape_knots(feats))
    sh = m.shapes["regular_timing"]
    assert np.all(np.diff(sh.ys) <= 1e-12)  # falls as the cv rises: only regularity raises a score
    assert sh.scalar(1.4) > sh.scalar(3.0)
    assert m.threshold.flag(m.score(m.strengths(feats)))[y == 1].mean() > 0.9


def test_fit_with_knots_holds_excluded_signals_unshaped_at_zero():
    feats, strs, y = _below_the_ramp(1)
    m = fit(strs, y, target_fpr=1e-3, feature_rows=feats, knots=shape_knots(feats), exclude={"single_turn"})
    assert m.weights["single_turn"] == 0.0 and "single_turn" not in m.shapes
    with pytest.raises(ConfigError, match="feature rows"):
        fit(strs, y, knots=shape_knots(feats))


def test_reasons_strongest_first():
    m = ScoreModel.default()
    f = _feats(cot_share=0.5, lp_share=0.02)
    s = strengths_scalar(f)
    rs = m.reasons(s, f)
    assert rs and rs[0].signal in SIGNALS_BY_NAME
    contrib = [r.contribution for r in rs]
    assert contrib == sorted(contrib, reverse=True)


@pytest.mark.parametrize("text, message", [
    ('{"weights": {"cot_elicitation": 1.0}}', "missing field 'bias'"),
    ('{"weights": [1], "bias": 0, "threshold": 0.5}', "has no attribute 'items'"),  # was an AttributeError traceback
    ('[1, 2]', "a JSON object was expected, not list"),
    ('{"weights": {}, "bias": 0, "threshold": "high"}', "could not convert string to float"),
])
def test_a_malformed_model_file_is_a_clear_error(tmp_path, text, message):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(ConfigError, match=rf"invalid score model: .*{message}.*distillguard train"):
        ScoreModel.load(tmp_path / "m.json")

