"""Exact tails vs brute force, deduplication, prompt-window exclusion, detection, decoy calibration."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from distillguard.provenance.detect import (
    Pairs,
    answer_pairs,
    binom_log10_sf,
    binom_sf,
    detect_text,
    gamma_log10_sf,
    gamma_sf,
    score_pairs,
)
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.radioactivity import blackbox_pairs, reading_pairs, reading_positions, run_test
from distillguard.provenance.watermark import Watermark


@pytest.mark.parametrize("n", [1, 5, 12, 30])
@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_binomial_tail_equals_brute_force(n, p):
    pf = Fraction(p).limit_denominator(1000)
    for k in range(n + 1):
        exact = sum(Fraction(math.comb(n, j)) * pf**j * (1 - pf) ** (n - j) for j in range(k, n + 1))
        assert binom_sf(k, n, p) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)


def test_binomial_far_tail_in_log_space():
    # P(X >= 1000 | n=1000, p=0.25) = 0.25**1000 underflows; its log10 must not
    assert binom_log10_sf(1000, 1000, 0.25) == pytest.approx(1000 * math.log10(0.25), rel=1e-9)
    assert binom_log10_sf(30, 100, 0.25) == pytest.approx(math.log10(binom_sf(30, 100, 0.25)), rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_gamma_tail_equals_closed_form(n):
    for s in (0.5, 2.0, 10.0, 40.0):
        closed = math.exp(-s) * sum(s**k / math.factorial(k) for k in range(n))
        assert gamma_sf(s, n) == pytest.approx(closed, rel=1e-10)
        assert gamma_log10_sf(s, n) == pytest.approx(math.log10(closed), rel=1e-8)


def test_dedup_scores_each_pair_once():
    p = Pairs(np.array([[1], [1], [2], [1]]), np.array([5, 5, 5, 6])).dedup()
    assert p.windows.ravel().tolist() == [1, 2, 1] and p.tokens.tolist() == [5, 5, 6]
    # a repeated text adds nothing
    wm = Watermark(WatermarkKey.derive(b"m", key_id="k", vocab_size=50))
    ans = list(range(10, 40))
    one = detect_text(ans, wm)
    assert detect_text(ans * 5, wm).scored <= one.scored + 2


def test_prompt_windows_excluded():
    pr = answer_pairs([7, 8, 9], [7, 8, 1, 2], 1)
    # windows (7) and (8) occur in the prompt -> the pairs (7->8) and (8->1) are dropped
    assert pr.windows.ravel().tolist() == [1] and pr.tokens.tolist() == [2]
    assert len(answer_pairs([7, 8, 9], [7, 8, 1, 2], 1, exclude_prompt_windows=False)) == 3


def _generate(wm: Watermark | None, n_tokens: int, V: int, rng) -> list[int]:
    """Sample from a fixed random 'language model' (logits depend on the previous token)."""
    base = np.random.default_rng(123).normal(0, 2.0, (V, V))
    seq = [int(rng.integers(V))]
    for _ in range(n_tokens):
        logits = base[seq[-1]]
        if wm is not None:
            logits = wm.process_logits(seq[-wm.h :], logits)
        p = np.exp(logits - logits.max())
        seq.append(int(rng.choice(V, p=p / p.sum())))
    return seq


@pytest.mark.parametrize("scheme", ["greenlist", "gumbel"])
def test_watermarked_text_detected_clean_text_not(scheme):
    key = WatermarkKey.derive(b"m", key_id="k", vocab_size=300, delta=2.5, scheme=scheme)
    wm = Watermark(key)
    rng = np.random.default_rng(0)
    marked = _generate(wm, 200, 300, rng)
    clean = _generate(None, 200, 300, rng)
    assert detect_text(marked, wm).p_value < 1e-6
    assert detect_text(clean, wm).p_value > 1e-3
    other = Watermark(WatermarkKey.derive(b"other", key_id="o", vocab_size=300, scheme=scheme))
    assert detect_text(marked, other).p_value > 1e-3  # another key sees nothing


def test_decoy_pvalues_uniform_and_real_key_ranked():
    key = WatermarkKey.derive(b"m", key_id="k", vocab_size=200, delta=2.0)
    wm = Watermark(key)
    rng = np.random.default_rng(1)
    marked = [([0], _generate(wm, 80, 200, rng)) for _ in range(5)]
    r = run_test("t", blackbox_pairs(marked, 1), key, n_decoys=300, seed=3)
    assert r.p_value < 1e-6
    assert r.ks_pvalue > 0.001  # decoys (never used) are uniform
    assert r.decoy_rank_p == pytest.approx(1 / 301)
    assert stats.kstest(r.decoy_pvalues, "uniform").pvalue == pytest.approx(r.ks_pvalue)


def test_supervised_filter_keeps_only_served_windows():
    from distillguard.provenance.radioactivity import served_windows

    filt = served_windows([([0], [1, 2, 3])], 1)
    p = blackbox_pairs([([9], [1, 2, 5, 6, 7])], 1, served_filter=filt)
    assert p.windows.ravel().tolist() == [1, 2] and p.tokens.tolist() == [2, 5]


def test_reading_mode_first_use_rule_and_null_calibration():
    """A suspect that never saw the key but copies the (watermarked) input is not flagged."""
    assert reading_positions([9], [1, 2, 1, 2, 3], 1).tolist() == [1, 2]
    key = WatermarkKey.derive(b"m", key_id="k", vocab_size=300, delta=3.0)
    wm = Watermark(key)
    rng = np.random.default_rng(2)
    texts = [([0], _generate(wm, 60, 300, rng)[1:]) for _ in range(30)]

    def copier(seqs):  # perfect "memoriser" of the input: predicts the true next token
        return [np.array(s[1:] + [0]) for s in seqs]

    base = np.random.default_rng(123).normal(0, 2.0, (300, 300))

    def clean_lm(seqs):  # the unwatermarked generator itself: predicts the true token often, knows no key
        return [base[np.array(s)].argmax(axis=1) for s in seqs]

    assert run_test("r", reading_pairs(texts, copier, 1), key, n_decoys=0).p_value < 1e-6
    assert run_test("r", reading_pairs(texts, clean_lm, 1), key, n_decoys=0).p_value > 1e-3


def test_score_pairs_empty():
    wm = Watermark(WatermarkKey.derive(b"m", key_id="k", vocab_size=10))
    d = score_pairs(Pairs.empty(1), wm)
    assert d.scored == 0 and d.p_value == 1.0
