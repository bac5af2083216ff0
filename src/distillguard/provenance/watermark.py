"""Keyed watermark schemes: green list (Kirchenbauer et al.) and Gumbel-max (Aaronson).

Randomness comes from a keyed PRF that gives the same bits on every machine:

* per context window ``w`` (the ``h`` token ids before the position) a 64-bit seed
  ``s_w`` = first 8 bytes of HMAC-SHA256(secret, domain | ids as 4-byte big-endian);
* per (window, token) pair a 64-bit value ``u(w, y) = splitmix64(s_w XOR y * 0x9E3779B97F4A7C15)``,
  plain wrapping integer arithmetic (numpy ``uint64``), vectorised over the whole vocabulary.

Green list: token ``y`` is green after ``w`` iff ``u(w, y) < gamma * 2**64``, independently for
every pair, so under "this text/model does not know the key" each distinct (window, token) pair is
green with probability exactly ``gamma`` and the count of green pairs is Binomial(n, gamma).
Generation adds ``delta`` to green logits.

``hashing="selfhash"``: the seed of a pair is an anchored min-hash over the window *and the
candidate token* (Kirchenbauer et al.'s SelfHash), which survives reordering inside the window;
pairs then share token hashes, so its tests are calibrated by the decoy keys rather than exactly.

Gumbel-max: ``r(w, y) = (u >> 11 + 0.5) / 2**53`` is uniform on (0, 1); generation picks
``argmax_y r_y ** (1 / p_y)`` (an exact sample from ``p``, so the text distribution is unchanged
over keys); each distinct pair contributes ``-ln(1 - r)`` ~ Exp(1) under the null, sum ~ Gamma(n, 1).

No torch random generator is involved anywhere.
"""

from __future__ import annotations

import hmac
import struct
from functools import lru_cache

import numpy as np

from distillguard.provenance.keys import WatermarkKey

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO64 = 2.0**64


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic, identical on every platform).

    >>> int(splitmix64(np.array([0], dtype=np.uint64))[0])
    16294208416658607535
    """
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _hmac64(secret: bytes, msg: bytes) -> int:
    return int.from_bytes(hmac.digest(secret, msg, "sha256")[:8], "big")


class Watermark:
    """A watermark scheme bound to one key: biases logits, and scores (window, token) pairs.

    Example:
        >>> key = WatermarkKey.derive(b"m", key_id="k", vocab_size=50, gamma=0.5)
        >>> wm = Watermark(key)
        >>> mask = wm.green_mask([7])
        >>> mask.shape, 10 < int(mask.sum()) < 40
        ((50,), True)
        >>> bool(wm.green(np.array([[7]]), np.array([int(mask.argmax())]))[0])
        True
    """

    def __init__(self, key: WatermarkKey):
        self.key = key
        self.h = key.context_width
        self._threshold = np.uint64(min(int(key.gamma * _TWO64), 2**64 - 1))
        self._domain = f"{key.scheme}/{key.hashing}|".encode()
        self._seed_cache: dict[tuple, int] = {}
        self._tok_hash: np.ndarray | None = None
        if key.hashing == "selfhash":
            self._k_tok = _hmac64(key.secret, b"selfhash-token")
            self._k_pair = np.uint64(_hmac64(key.secret, self._domain + b"pair"))

    # -- the PRF ---------------------------------------------------------------------------
    def window_seed(self, window) -> int:
        """64-bit HMAC-SHA256 seed of one context window (tuple of token ids)."""
        w = tuple(int(t) for t in window)
        s = self._seed_cache.get(w)
        if s is None:
            s = _hmac64(self.key.secret, self._domain + struct.pack(f">{len(w)}I", *w))
            if len(self._seed_cache) < 2_000_000:
                self._seed_cache[w] = s
        return s

    def _token_hashes(self, n: int) -> np.ndarray:
        if self._tok_hash is None or len(self._tok_hash) < n:
            ids = np.arange(max(n, self.key.vocab_size or 0), dtype=np.uint64)
            with np.errstate(over="ignore"):
                self._tok_hash = splitmix64(np.uint64(self._k_tok) ^ (ids * GOLDEN))
        return self._tok_hash

    def u_all(self, window, vocab_size: int) -> np.ndarray:
        """u(w, y) for every token y < vocab_size (uint64), for generation."""
        ids = np.arange(vocab_size, dtype=np.uint64)
        with np.errstate(over="ignore"):
            if self.key.hashing == "selfhash":
                th = self._token_hashes(vocab_size)
                anchor = np.minimum(th[np.asarray(window, dtype=np.int64)].min(), th[:vocab_size])
                return splitmix64(self._k_pair ^ anchor ^ (ids * GOLDEN))
            return splitmix64(np.uint64(self.window_seed(window)) ^ (ids * GOLDEN))

    def window_messages(self, windows: np.ndarray) -> list[bytes]:
        """The HMAC messages of window rows (the same for every key with these parameters)."""
        windows = np.asarray(windows, dtype=">u4")
        d = self._domain
        return [d + row.tobytes() for row in windows]

    def seeds(self, messages: list[bytes]) -> np.ndarray:
        """64-bit window seeds for prepared messages (one HMAC-SHA256 each)."""
        sec = self.key.secret
        raw = b"".join([hmac.digest(sec, m, "sha256")[:8] for m in messages])
        return np.frombuffer(raw, dtype=">u8").astype(np.uint64)

    def u(self, windows: np.ndarray, tokens: np.ndarray, *, prepared: "PreparedPairs | None" = None) -> np.ndarray:
        """u(w, y) for n pairs: ``windows`` (n, h) int, ``tokens`` (n,) int -> (n,) uint64."""
        if prepared is None:
            prepared = PreparedPairs(windows, tokens, self)
        tokens = prepared.tokens
        if len(tokens) == 0:
            return np.zeros(0, dtype=np.uint64)
        with np.errstate(over="ignore"):
            y = tokens.astype(np.uint64)
            if self.key.hashing == "selfhash":
                windows = prepared.windows
                th = self._token_hashes(int(max(windows.max(), tokens.max())) + 1)
                anchor = np.minimum(th[windows].min(axis=1), th[tokens])
                return splitmix64(self._k_pair ^ anchor ^ (y * GOLDEN))
            seeds = self.seeds(prepared.messages)
            return splitmix64(seeds[prepared.inverse] ^ (y * GOLDEN))

    # -- green list --------------------------------------------------------------------------
    def green_mask(self, window, vocab_size: int | None = None) -> np.ndarray:
        """Boolean green list (length vocab_size) after ``window``."""
        return self.u_all(window, vocab_size or self.key.vocab_size) < self._threshold

    def green(self, windows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Whether each (window, token) pair is green."""
        return self.u(windows, tokens) < self._threshold

    # -- Gumbel ----------------------------------------------------------------------------
    @staticmethod
    def uniforms(u: np.ndarray) -> np.ndarray:
        return ((u >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53

    def pair_scores(self, windows: np.ndarray, tokens: np.ndarray, *, prepared: "PreparedPairs | None" = None) -> np.ndarray:
        """Per-pair score: 1.0/0.0 (green) for the green list, -ln(1 - r) for Gumbel."""
        u = self.u(windows, tokens, prepared=prepared)
        if self.key.scheme == "gumbel":
            return -np.log1p(-self.uniforms(u))
        return (u < self._threshold).astype(np.float64)

    # -- generation ------------------------------------------------------------------------
    def process_logits(self, window, logits: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
        """Watermarked logits for one position (a new array; ``logits`` is left untouched).

        Green list: ``delta`` added to green tokens (sample from the result as usual).
        Gumbel: every token but the Gumbel-max choice gets ``-inf`` (deterministic given the
        context, the randomness comes from the key).
        """
        logits = np.asarray(logits, dtype=np.float64)
        if len(window) < self.h:
            return logits.copy()
        window = window[-self.h :]
        u = self.u_all(window, logits.shape[-1])
        if self.key.scheme == "gumbel":
            z = logits / max(temperature, 1e-6)
            z = z - z.max()
            p = np.exp(z)
            p /= p.sum()
            r = self.uniforms(u)
            with np.errstate(divide="ignore"):
                choice = int(np.argmax(np.where(p > 0, np.log(r) / p, -np.inf)))
            out = np.full_like(logits, -np.inf)
            out[choice] = logits[choice]
            return out
        return logits + self.key.delta * (u < self._threshold)


class PreparedPairs:
    """Pairs with their distinct windows and HMAC messages computed once (reused across keys)."""

    def __init__(self, windows, tokens, wm: Watermark):
        self.tokens = np.asarray(tokens, dtype=np.int64)
        self.windows = np.asarray(windows, dtype=np.int64).reshape(len(self.tokens), -1)
        if len(self.tokens):
            uniq, inv = np.unique(self.windows, axis=0, return_inverse=True)
        else:
            uniq, inv = self.windows, np.zeros(0, dtype=np.int64)
        self.inverse = inv.reshape(-1)
        self.messages = wm.window_messages(uniq)


@lru_cache(maxsize=64)
def _cached(key: WatermarkKey) -> Watermark:
    return Watermark(key)


def watermark_for(key: WatermarkKey) -> Watermark:
    """A cached :class:`Watermark` for ``key`` (keeps the per-window seed cache warm)."""
    return _cached(key)
