"""Synchronised activity: accounts active in the same five-minute windows, found with MinHash bands.

One orchestrator driving many accounts sends their requests in the same bursts: the accounts are
active in the same five-minute buckets and idle in the same ones. An account's *activity set* is
its distinct buckets (``floor(ts / SYNC_BUCKET_S)``); two accounts whose sets have a high Jaccard
similarity are synchronised. Comparing every pair is quadratic, so each set gets a MinHash
signature of ``SYNC_BANDS x SYNC_ROWS`` values, and each band of ``SYNC_ROWS`` values becomes one
key value (``sync_timing``): two accounts share a band value with probability ``J ** SYNC_ROWS``, so
they share at least one of the bands with probability ``1 - (1 - J ** 5) ** 4``: 0.97 at a Jaccard of
0.9, 0.39 at 0.7, 0.04 at 0.4, and 4e-6 at the 0.05 that two independent accounts typically have.

Only accounts with a pattern to compare get keys: at least :data:`SYNC_MIN_BUCKETS` active buckets,
and active in at most :data:`SYNC_MAX_DUTY` of the buckets their activity spans (an account busy in
every window of its span, a product's front-end or a big pipeline, is "in sync" with every other
such account and says nothing about who operates it).

The hash of a bucket under row ``i`` is ``(bucket * A[i] + B[i]) mod P`` with fixed constants, the
same in DuckDB SQL (:func:`sync_keys_sql`) and in Python (:class:`ActivitySignature`, the online
detector's twin). Batch signs the account's whole activity; online signs it when the account reaches
:data:`SYNC_MIN_BUCKETS` buckets and again each time that count doubles, so the same synchronised
accounts share values in both, not always the same values.

>>> a, b = ActivitySignature(), ActivitySignature()
>>> emitted = [(a.add(t * 900.0), b.add(t * 900.0 + 30)) for t in range(67)]  # the same bursts, every 15 min
>>> [(i, ka == kb) for i, (ka, kb) in enumerate(emitted) if ka]
[(23, True), (47, True)]
"""

from __future__ import annotations

import hashlib
import random
from array import array

import numpy as np

#: Width of an activity bucket (seconds).
SYNC_BUCKET_S = 300
#: Accounts need this many active buckets before their activity is compared (two hours of bursts).
SYNC_MIN_BUCKETS = 24
#: Accounts active in more than this share of the buckets in their span get no key (always on).
SYNC_MAX_DUTY = 0.5
#: MinHash signature: this many bands of :data:`SYNC_ROWS` rows each.
SYNC_BANDS = 4
SYNC_ROWS = 5
#: The prime modulus of the bucket hashes (2^31 - 1: bucket x A stays within 64 bits).
_P = 2_147_483_647
_rng = random.Random(20261128)  # fixed: the constants are part of the key format
_A = tuple(_rng.randrange(1, _P) for _ in range(SYNC_BANDS * SYNC_ROWS))
_B = tuple(_rng.randrange(0, _P) for _ in range(SYNC_BANDS * SYNC_ROWS))
del _rng


def _bucket_hashes(bk: int) -> list[int]:
    """The bucket's hash under every row (the SQL twin is in :func:`sync_keys_sql`)."""
    return [(bk * a + b) % _P for a, b in zip(_A, _B)]


def band_value(band: int, mins: list[int] | array) -> str:
    """The key value of one band: its index and an MD5 of its rows' minima (DuckDB's ``md5`` in SQL).

    >>> band_value(0, [1, 2, 3, 4, 5])
    'b0:afe805e5a3c3ec7f'
    """
    text = ",".join(str(m) for m in mins)
    return f"b{band}:{hashlib.md5(text.encode()).hexdigest()[:16]}"


def sync_keys_sql(events: str) -> str:
    """SQL of (account_id, 'sync_timing', value, NULL) band keys of the accounts with an activity pattern."""
    consts = ", ".join(f"({i}, {a}, {b})" for i, (a, b) in enumerate(zip(_A, _B)))
    return f"""
WITH _sb AS (SELECT DISTINCT account_id, CAST(floor(ts / {SYNC_BUCKET_S}) AS BIGINT) AS bk FROM {events} WHERE ts IS NOT NULL),
_sa AS (
  SELECT account_id FROM _sb GROUP BY account_id
  HAVING count(*) >= {SYNC_MIN_BUCKETS} AND count(*) <= {SYNC_MAX_DUTY} * (max(bk) - min(bk) + 1)
),
_sc(i, a, b) AS (VALUES {consts}),
_sm AS (
  SELECT account_id, i, min((((bk * a + b) % {_P}) + {_P}) % {_P}) AS m  -- Python's modulo, also before 1970
  FROM (SELECT * FROM _sb SEMI JOIN _sa USING (account_id)), _sc GROUP BY account_id, i
)
SELECT account_id, 'sync_timing' AS type,
       printf('b%d:%s', i // {SYNC_ROWS}, left(md5(string_agg(CAST(m AS VARCHAR), ',' ORDER BY i)), 16)) AS value,
       NULL::DOUBLE AS log2_expected
FROM _sm GROUP BY account_id, i // {SYNC_ROWS}
"""


#: New buckets wait in a short list and are hashed into the minima in one numpy pass every this many
#: (and whenever the signature is read): a pass per new bucket was the online detector's sixth cost.
_FOLD_EVERY = 32
_A_NP = np.array(_A, dtype=np.int64)
_B_NP = np.array(_B, dtype=np.int64)
_BK_SAFE = 1 << 32  # |bucket| below this: bucket x A + B fits in 64 bits


class ActivitySignature:
    """One account's activity set, online: its MinHash minima, bucket count and span; :meth:`add` returns
    the band key values when the account reaches :data:`SYNC_MIN_BUCKETS` buckets and at each doubling
    of that count (if it is not always on), else an empty tuple. About 300 bytes per account, plus 8 a
    bucket not yet hashed (at most :data:`_FOLD_EVERY`)."""

    __slots__ = ("mins", "n", "first", "last", "next_at", "pending")

    def __init__(self) -> None:
        self.mins = array("q", [_P] * (SYNC_BANDS * SYNC_ROWS))
        self.n = 0
        self.first = -1
        self.last = -1
        self.next_at = SYNC_MIN_BUCKETS
        self.pending = array("q")

    def add(self, ts: float) -> tuple[str, ...]:
        bk = int(ts // SYNC_BUCKET_S)
        if self.n and bk == self.last:
            return ()
        if self.n == 0:
            self.first = self.last = bk
        elif bk > self.last:
            self.last = bk
        else:
            # out of order, without the set of buckets: a late bucket that lowers no minimum counts as
            # seen (one that does was never hashed before: the minimum would already be at most its hash)
            self._fold()
            if bk >= self.first and all(h >= x for h, x in zip(_bucket_hashes(bk), self.mins)):
                return ()
            self.first = min(self.first, bk)
        self.n += 1
        p = self.pending
        p.append(bk)
        if self.n < self.next_at:
            if len(p) >= _FOLD_EVERY:
                self._fold()
            return ()
        self.next_at *= 2
        if self.n > SYNC_MAX_DUTY * (self.last - self.first + 1):
            return ()
        self._fold()
        m = self.mins
        return tuple(band_value(b, m[b * SYNC_ROWS:(b + 1) * SYNC_ROWS]) for b in range(SYNC_BANDS))

    def _fold(self) -> None:
        """Hash the pending buckets into the minima (numpy's ``%`` is Python's, as :func:`_bucket_hashes`)."""
        p = self.pending
        if not p:
            return
        bks = np.frombuffer(p, dtype=np.int64)
        if -_BK_SAFE < bks.min() and bks.max() < _BK_SAFE:
            h = ((bks[:, None] * _A_NP + _B_NP) % _P).min(axis=0)
            self.mins = array("q", np.minimum(h, np.frombuffer(self.mins, dtype=np.int64)).tobytes())
        else:  # bucket x A would overflow 64 bits (a timestamp in the far future or in milliseconds)
            for bk in p:
                self.mins = array("q", map(min, self.mins, _bucket_hashes(bk)))
        self.pending = array("q")
