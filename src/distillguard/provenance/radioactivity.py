"""Radioactivity tests: was a suspect model trained on text we served with a watermark key?

Two access modes, each producing deduplicated (window, token) pairs that are then scored with
the exact tail of the key's scheme (:mod:`distillguard.provenance.detect`) and calibrated with
decoy keys:

* **black-box** (:func:`blackbox_pairs`): the suspect's answers to prompts. Pairs whose window
  overlaps or repeats the prompt are dropped. *Supervised*: keep only pairs whose window occurs
  in outputs we are known to have served (from our traffic logs); *unsupervised*: keep all.
* **reading mode** (:func:`reading_pairs`, open weights): teacher-force our watermarked texts
  through the suspect and score its top-1 next-token predictions. A prediction at position t is
  scored only if its window was not already used to generate an earlier token of the same text:
  then the context the suspect saw is independent of that window's green list, so a suspect
  that never trained on our text predicts a green token with probability exactly gamma, even
  though it reads watermarked text (the "copying" worry is void by construction).

Under the null "the suspect's outputs do not depend on our key", every distinct pair is green
with probability gamma independently (the PRF), so the p-value is exact. Decoy keys that never
served anything give p-values that must be uniform (KS test); the real key's p-value is also
ranked against them, and :func:`bonferroni` corrects for the number of tests run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import stats

from distillguard.provenance.detect import Detection, Pairs, answer_pairs, score_pairs, window_keys
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.watermark import PreparedPairs, Watermark, watermark_for

Text = tuple[Sequence[int], Sequence[int]]  # (prompt token ids, answer token ids)


def served_windows(served: Iterable[Text], h: int) -> np.ndarray:
    """Fingerprints of every context window inside answers we served (supervised filter)."""
    keys = []
    for _, answer in served:
        a = np.asarray(answer, dtype=np.int64)
        if len(a) >= h:
            idx = np.arange(h, len(a) + 1)
            keys.append(window_keys(np.stack([a[idx - h + j] for j in range(h)], axis=1)))
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.uint64)


def blackbox_pairs(answers: Iterable[Text], h: int, *, served_filter: np.ndarray | None = None) -> Pairs:
    """Deduplicated pairs from a suspect's (prompt, answer) token ids.

    ``served_filter`` (from :func:`served_windows`) switches on supervised mode.

    >>> blackbox_pairs([([1], [2, 3, 2, 3])], 1).tokens.tolist()
    [3, 2]
    """
    pairs = Pairs.concat([answer_pairs(p, a, h) for p, a in answers], h)
    if served_filter is not None:
        pairs = pairs.keep_windows(served_filter)
    return pairs.dedup()


def reading_positions(prompt_ids: Sequence[int], answer_ids: Sequence[int], h: int) -> np.ndarray:
    """Answer positions j whose window is inside the answer, not in the prompt, and not used
    to generate an earlier answer token (first use of the window in this text).

    >>> reading_positions([9], [1, 2, 1, 2, 3], 1).tolist()
    [1, 2]
    """
    full = list(prompt_ids) + list(answer_ids)
    start = len(prompt_ids)
    prompt_w = {tuple(full[i - h : i]) for i in range(h, start + 1)}
    used: set[tuple] = set()
    keep = []
    for j in range(len(answer_ids)):
        t = start + j
        if t < h:
            continue
        w = tuple(full[t - h : t])
        if j >= h and w not in used and w not in prompt_w:
            keep.append(j)
        used.add(w)
    return np.asarray(keep, dtype=np.int64)


def reading_pairs(
    texts: Iterable[Text],
    top1: Callable[[list[list[int]]], list[np.ndarray]],
    h: int,
    *,
    batch_size: int = 16,
) -> Pairs:
    """Reading-mode pairs: (window from our text, suspect's top-1 prediction), deduplicated.

    ``top1(sequences)`` returns, per sequence, the arg-max next-token prediction after every
    prefix (``out[i][t]`` predicts token ``t + 1``).
    """
    texts = list(texts)
    parts = []
    for b in range(0, len(texts), batch_size):
        chunk = texts[b : b + batch_size]
        seqs = [list(p) + list(a) for p, a in chunk]
        preds = top1(seqs)
        for (p, a), full, pred in zip(chunk, seqs, preds):
            js = reading_positions(p, a, h)
            if not len(js):
                continue
            t = len(p) + js
            f = np.asarray(full, dtype=np.int64)
            windows = np.stack([f[t - h + i] for i in range(h)], axis=1)
            parts.append(Pairs(windows, np.asarray(pred, dtype=np.int64)[t - 1]))
    return Pairs.concat(parts, h).dedup()


@dataclass
class TestResult:
    """One radioactivity test under the real key, calibrated with decoy keys."""

    test: str
    key_id: str
    scheme: str
    scored_tokens: int
    score: float
    p_value: float
    log10_p: float
    decoy_pvalues: list[float] = field(default_factory=list)
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    decoy_rank_p: float | None = None
    bonferroni_p: float | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def run_test(
    name: str, pairs: Pairs, key: WatermarkKey, *, n_decoys: int = 100, seed: int = 0, meta: dict | None = None
) -> TestResult:
    """Score ``pairs`` under ``key`` and under ``n_decoys`` decoy keys.

    Example:
        >>> key = WatermarkKey.derive(b"m", key_id="k", vocab_size=30)
        >>> rng = np.random.default_rng(0)
        >>> pairs = Pairs(rng.integers(0, 30, (200, 1)), rng.integers(0, 30, 200)).dedup()
        >>> r = run_test("demo", pairs, key, n_decoys=20)
        >>> r.p_value > 1e-3, len(r.decoy_pvalues)
        (True, 20)
    """
    wm = watermark_for(key)
    prep = PreparedPairs(pairs.windows, pairs.tokens, wm)
    det: Detection = score_pairs(pairs, wm, dedup=False, prepared=prep)
    decoys = [score_pairs(pairs, Watermark(d), dedup=False, prepared=prep).p_value for d in key.decoys(n_decoys, seed=seed)]
    res = TestResult(name, key.key_id, key.scheme, det.scored, det.score, det.p_value, det.log10_p, decoys, meta=meta or {})
    if decoys:
        ks = stats.kstest(decoys, "uniform")
        res.ks_statistic, res.ks_pvalue = float(ks.statistic), float(ks.pvalue)
        res.decoy_rank_p = (1 + sum(d <= det.p_value for d in decoys)) / (len(decoys) + 1)
    return res


def bonferroni(results: list[TestResult]) -> list[TestResult]:
    """Set ``bonferroni_p = min(1, m * p)`` over the ``m`` tests run (in place)."""
    m = max(len(results), 1)
    for r in results:
        r.bonferroni_p = min(1.0, r.p_value * m)
    return results
