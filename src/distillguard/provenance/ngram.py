"""A small interpolated n-gram language model (Witten-Bell), vectorised with numpy/scipy.

Used by the ``--quick`` experiment as a teacher trained in seconds on real text and as tiny
students "trained" (counted) on mixtures of watermarked and clean text, and by tests.
"""

from __future__ import annotations

import re

import numpy as np
from scipy import sparse

from distillguard.provenance.watermark import GOLDEN, splitmix64

PAD, UNK, SEP, EOS = 0, 1, 2, 3
SPECIALS = ["<pad>", "<unk>", "<sep>", "<eos>"]
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class WordTokenizer:
    """Lower-cased words and punctuation, the ``vocab_size - 4`` most frequent kept.

    Example:
        >>> tok = WordTokenizer.fit(["the cat sat", "the dog"], vocab_size=8)
        >>> tok.decode(tok.encode("The cat ran"))
        'the cat <unk>'
    """

    def __init__(self, *, words: list[str]):
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def fit(cls, texts, *, vocab_size: int) -> "WordTokenizer":
        counts: dict[str, int] = {}
        for t in texts:
            for w in _WORD.findall(t.lower()):
                counts[w] = counts.get(w, 0) + 1
        top = sorted(counts, key=lambda w: (-counts[w], w))[: vocab_size - len(SPECIALS)]
        return cls(words=SPECIALS + top)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(w, UNK) for w in _WORD.findall(text.lower())]

    def decode(self, ids) -> str:
        return " ".join(self.words[int(i)] for i in ids)


class NgramLM:
    """Interpolated Witten-Bell n-gram model over integer token ids.

    Example:
        >>> lm = NgramLM(order=2, vocab_size=6).fit([[4, 5, 4, 5]])
        >>> int(lm.probs(np.array([[4]])).argmax())
        5
    """

    def __init__(self, *, order: int, vocab_size: int):
        self.order = order
        self.vocab_size = vocab_size

    def fit(self, sequences) -> "NgramLM":
        V, n = self.vocab_size, self.order
        seqs = [np.concatenate([np.full(n - 1, PAD), np.asarray(s, dtype=np.int64)]) for s in sequences]
        allt = np.concatenate([s[n - 1 :] for s in seqs]) if seqs else np.zeros(0, dtype=np.int64)
        uni = np.bincount(allt, minlength=V).astype(np.float64)
        self.unigram_ = (uni + 1.0) / (uni.sum() + V)
        self.tables_ = []
        per_k: dict[int, tuple[list, list]] = {k: ([], []) for k in range(2, n + 1)}
        for s in seqs:
            idx = np.arange(n - 1, len(s))
            if not len(idx):
                continue
            code = np.full(len(idx), 0x3C6EF372FE94F82B, dtype=np.uint64)
            for k in range(2, n + 1):  # context of the k-1 most recent ids, hashed
                code = splitmix64(code ^ (s[idx - (k - 1)].astype(np.uint64) * GOLDEN))
                per_k[k][0].append(code)
                per_k[k][1].append(s[idx])
        for k in range(2, n + 1):
            codes = np.concatenate(per_k[k][0]) if per_k[k][0] else np.zeros(0, dtype=np.uint64)
            nx = np.concatenate(per_k[k][1]) if per_k[k][1] else np.zeros(0, dtype=np.int64)
            uniq, rows = np.unique(codes, return_inverse=True)
            m = sparse.csr_matrix((np.ones(len(nx)), (rows.reshape(-1), nx)), shape=(len(uniq), V))
            m.sum_duplicates()
            tot = np.asarray(m.sum(axis=1)).ravel()
            distinct = np.diff(m.indptr).astype(np.float64)
            self.tables_.append((uniq, m, tot, distinct))
        return self

    def probs(self, contexts: np.ndarray) -> np.ndarray:
        """Next-token distributions (B, V) for contexts (B, order-1) of the most recent ids."""
        contexts = np.asarray(contexts, dtype=np.int64)
        B, V = len(contexts), self.vocab_size
        p = np.broadcast_to(self.unigram_, (B, V)).copy()
        code = np.full(B, 0x3C6EF372FE94F82B, dtype=np.uint64)
        for k, (uniq, m, tot, distinct) in zip(range(2, self.order + 1), self.tables_):
            code = splitmix64(code ^ (contexts[:, -(k - 1)].astype(np.uint64) * GOLDEN))
            pos = np.searchsorted(uniq, code)
            pos = np.minimum(pos, max(len(uniq) - 1, 0))
            found = (uniq[pos] == code) if len(uniq) else np.zeros(B, dtype=bool)
            if not found.any():
                continue
            r = pos[found]
            lam = tot[r] / (tot[r] + distinct[r])
            counts = m[r].toarray() / tot[r][:, None]
            p[found] = lam[:, None] * counts + (1 - lam)[:, None] * p[found]
        return p

    def context_of(self, seq, t: int) -> np.ndarray:
        """The ``order - 1`` ids before position ``t`` of ``seq`` (left-padded with PAD)."""
        n1 = self.order - 1
        s = np.concatenate([np.full(n1, PAD), np.asarray(seq[:t], dtype=np.int64)])
        return s[len(s) - n1 :] if n1 else s[:0]

    def top1(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Arg-max prediction after every prefix of each sequence (reading mode)."""
        out = []
        n1 = self.order - 1
        for seq in sequences:
            s = np.concatenate([np.full(n1, PAD), np.asarray(seq, dtype=np.int64)])
            idx = np.arange(n1 + 1, len(s) + 1)  # prefix ends (exclusive) for positions 0..len-1
            ctx = np.stack([s[idx - n1 + j] for j in range(n1)], axis=1) if n1 else np.zeros((len(idx), 0), dtype=np.int64)
            step = max(16, 2**21 // self.vocab_size)
            preds = np.concatenate([self.probs(ctx[b : b + step]).argmax(axis=1) for b in range(0, len(ctx), step)]) if len(ctx) else np.zeros(0, dtype=np.int64)
            out.append(preds)
        return out

    def log_prob(self, seq, start: int) -> tuple[float, int]:
        """Sum of log-probabilities of ``seq[start:]`` given its prefix, and the token count."""
        seq = np.asarray(seq, dtype=np.int64)
        if start >= len(seq):
            return 0.0, 0
        ctx = np.stack([self.context_of(seq, t) for t in range(start, len(seq))])
        p = self.probs(ctx)[np.arange(len(seq) - start), seq[start:]]
        return float(np.log(p).sum()), len(seq) - start
