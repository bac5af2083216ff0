"""Exact tail probabilities and (window, token) pair extraction for watermark detection.

Never a normal approximation: the green-list count is tested with the exact binomial tail
``P(X >= k) = I_gamma(k, n - k + 1)`` (regularised incomplete beta, ``scipy.special.betainc``);
the Gumbel score with the exact Gamma tail ``P(S >= s) = Q(n, s)`` (``scipy.special.gammaincc``).
When a tail underflows double precision its base-10 logarithm is still computed exactly in log
space (sum of the binomial terms, or the Gamma tail's continued fraction via ``scipy.stats``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from distillguard.provenance.watermark import GOLDEN, Watermark, splitmix64


def binom_sf(k: int, n: int, p: float) -> float:
    """Exact ``P(Binomial(n, p) >= k)``.

    >>> binom_sf(0, 10, 0.25), round(binom_sf(10, 10, 0.5), 6)
    (1.0, 0.000977)
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return float(special.betainc(k, n - k + 1, p))


def binom_log10_sf(k: int, n: int, p: float) -> float:
    """log10 of :func:`binom_sf`, exact in log space (no underflow)."""
    if k <= 0:
        return 0.0
    if k > n:
        return -np.inf
    v = binom_sf(k, n, p)
    if v > 1e-290:
        return float(np.log10(v))
    j = np.arange(k, n + 1)
    logpmf = special.gammaln(n + 1) - special.gammaln(j + 1) - special.gammaln(n - j + 1) + j * np.log(p) + (n - j) * np.log1p(-p)
    return float(special.logsumexp(logpmf) / np.log(10))


def gamma_sf(s: float, n: int) -> float:
    """Exact ``P(Gamma(n, 1) >= s)`` (sum of n Exp(1) scores).

    >>> round(gamma_sf(1.0, 1), 6)
    0.367879
    """
    if n <= 0:
        return 1.0
    return float(special.gammaincc(n, s))


def gamma_log10_sf(s: float, n: int) -> float:
    if n <= 0:
        return 0.0
    v = gamma_sf(s, n)
    if v > 1e-290:
        return float(np.log10(v))
    return float(stats.gamma.logsf(s, n) / np.log(10))


def window_keys(windows: np.ndarray) -> np.ndarray:
    """A 64-bit fingerprint per window row (for set membership and deduplication)."""
    windows = np.asarray(windows, dtype=np.int64)
    if windows.ndim == 1:
        windows = windows[:, None]
    acc = np.full(len(windows), 0x243F6A8885A308D3, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(windows.shape[1]):
            acc = splitmix64(acc ^ (windows[:, j].astype(np.uint64) * GOLDEN))
    return acc


@dataclass
class Pairs:
    """Scored (window, token) pairs: ``windows`` (n, h) and ``tokens`` (n,)."""

    windows: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def empty(cls, h: int) -> "Pairs":
        return cls(np.zeros((0, h), dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: list["Pairs"], h: int) -> "Pairs":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(h)
        return cls(np.concatenate([p.windows for p in parts]), np.concatenate([p.tokens for p in parts]))

    def dedup(self) -> "Pairs":
        """Each distinct (window, token) pair once (first occurrence kept, order preserved)."""
        if not len(self):
            return self
        rows = np.column_stack([self.windows, self.tokens])
        _, first = np.unique(rows, axis=0, return_index=True)
        first.sort()
        return Pairs(self.windows[first], self.tokens[first])

    def keep_windows(self, allowed_keys: np.ndarray) -> "Pairs":
        """Only pairs whose window fingerprint is in ``allowed_keys`` (supervised filter)."""
        m = np.isin(window_keys(self.windows), allowed_keys)
        return Pairs(self.windows[m], self.tokens[m])


def answer_pairs(prompt_ids, answer_ids, h: int, *, exclude_prompt_windows: bool = True) -> Pairs:
    """Pairs for the answer tokens of one (prompt, answer) sequence.

    A pair is kept when its window lies entirely inside the answer and (with
    ``exclude_prompt_windows``) that window does not also occur in the prompt, so text copied
    from the prompt is never scored.

    >>> p = answer_pairs([1, 2], [3, 4, 5], 1)
    >>> p.windows.ravel().tolist(), p.tokens.tolist()
    ([3, 4], [4, 5])
    """
    a = np.asarray(answer_ids, dtype=np.int64)
    if len(a) <= h:
        return Pairs.empty(h)
    idx = np.arange(h, len(a))
    windows = np.stack([a[idx - h + j] for j in range(h)], axis=1)
    pairs = Pairs(windows, a[idx])
    if exclude_prompt_windows and len(prompt_ids) >= h:
        pw = np.asarray(prompt_ids, dtype=np.int64)
        pidx = np.arange(h, len(pw) + 1)
        pwin = np.stack([pw[pidx - h + j] for j in range(h)], axis=1)
        keep = ~np.isin(window_keys(pairs.windows), window_keys(pwin))
        pairs = Pairs(pairs.windows[keep], pairs.tokens[keep])
    return pairs


@dataclass
class Detection:
    """Result of scoring pairs under one key."""

    key_id: str
    scheme: str
    scored: int
    score: float  # green count (green list) or sum of -ln(1-r) (Gumbel)
    p_value: float
    log10_p: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def score_pairs(pairs: Pairs, wm: Watermark, *, dedup: bool = True, prepared=None) -> Detection:
    """Score pairs under ``wm``'s key with the exact tail of the scheme.

    Example:
        >>> from distillguard.provenance.keys import WatermarkKey
        >>> wm = Watermark(WatermarkKey.derive(b"m", key_id="k", vocab_size=10))
        >>> score_pairs(Pairs.empty(1), wm).p_value
        1.0
    """
    if dedup:
        pairs = pairs.dedup()
    n = len(pairs)
    s = wm.pair_scores(pairs.windows, pairs.tokens, prepared=prepared) if n else np.zeros(0)
    total = float(s.sum())
    if wm.key.scheme == "gumbel":
        p, lp = gamma_sf(total, n), gamma_log10_sf(total, n)
    else:
        k = int(round(total))
        p, lp = binom_sf(k, n, wm.key.gamma), binom_log10_sf(k, n, wm.key.gamma)
    return Detection(wm.key.key_id, wm.key.scheme, n, total, p, lp)


def detect_text(token_ids, wm: Watermark, *, prompt_ids=()) -> Detection:
    """Is this token sequence watermarked with ``wm``'s key? (pairs deduplicated)."""
    return score_pairs(answer_pairs(list(prompt_ids), list(token_ids), wm.h), wm)
