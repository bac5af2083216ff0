"""Per-account statistics: mergeable, bounded, and computed identically in batch and online.

An account (or a cluster of accounts) is summarised by *stats*: counts, sums, a 24-bin hour
histogram, the set of active days, and KMV sketches (the k smallest distinct 64-bit hashes) of its
prompts, prompt heads and tails, parameter signatures and vocabulary. Every stat can be updated one
request at a time (:meth:`AccountStats.update`), merged (:meth:`AccountStats.merge`, for clusters),
and computed for all accounts at once in DuckDB (:func:`stats_sql`). :func:`features` turns stats into
the features the signals read, with numpy, for one account or a whole table.

>>> s = AccountStats()
>>> from distillguard.features.derive import derive_one
>>> ev = {"ts": 0.0, "prompt": "hello there friend", "completion_tokens": 5, "n_assistant_msgs": 0}
>>> _ = s.update(0.0, derive_one(ev), ["hello", "there", "friend"])
>>> s.n, s.out_tok, s.single
(1, 5, 1)
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
import sys
from array import array
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from distillguard.features.derive import DERIVED_FLAGS, WORD_PATTERN, WORDS_PROMPT_CHARS, derive_sql
from distillguard.features.pivot import PIVOT_MIN_POST, pivot_flags_sql, pivot_windows_sql
from distillguard.features.repeats import REPEAT_MIN_SAMPLED, repeat_flag_sql, repeat_window_sql

#: Per-request flags counted per account: those of one request alone, then the flags that depend on
#: the traffic before it: model pivots (:mod:`~distillguard.features.pivot`) and prompts already sent
#: by another account (:mod:`~distillguard.features.repeats`).
FLAG_COLUMNS = DERIVED_FLAGS + ("post", "newm", "rpt")
_flag_values = itemgetter(*FLAG_COLUMNS)
KMV_K = {"kmv_ph": 128, "kmv_pre": 128, "kmv_suf": 128}
#: Small exact sets (the lexicographically smallest distinct values, capped): parameter signatures, temperatures.
SET_K = {"set_psig": 32, "set_temp": 16}
_K_PH, _K_PRE, _K_SUF = KMV_K["kmv_ph"], KMV_K["kmv_pre"], KMV_K["kmv_suf"]
_K_PSIG, _K_TEMP = SET_K["set_psig"], SET_K["set_temp"]
WORDS_FIRST_N = 64  # vocabulary breadth looks at an account's first 64 prompts
#: End-user ids counted per account online (a space-saving table: exact while an account has at most this
#: many distinct end users, else each count is over by at most requests / EU_TRACK).
EU_TRACK = 1024
FAST_IAT_S = 2.0  # inter-arrival below this counts as machine-speed
MAX_DAYS = 4096
_TWO64 = float(2**64)


_XLOGX_N = 4096
_XLOGX = [0.0] + [i * math.log(i) for i in range(1, _XLOGX_N)]


def _sum_xlogx(counts: Iterable[int]) -> float:
    return sum(c * math.log(c) for c in counts if c > 0)


def kmv_merge(a: Iterable[int], b: Iterable[int], k: int) -> list[int]:
    return sorted(set(a) | set(b))[:k]


def kmv_estimate(kmv: Sequence[int] | np.ndarray, k: int) -> float:
    """Distinct-count estimate: exact below ``k`` values, else (k-1)/(k-th smallest hash / 2^64)."""
    m = len(kmv)
    if m < k:
        return float(m)
    return (k - 1) / (float(kmv[k - 1]) / _TWO64)


@dataclass
class AccountStats:
    """Mergeable summary of one account's (or cluster's) requests."""

    n: int = 0
    t0: float = math.inf
    t1: float = -math.inf
    out_tok: int = 0
    in_tok: int = 0
    iat_n: int = 0
    iat_sum: float = 0.0
    iat_sum2: float = 0.0
    fast_n: int = 0
    words_total: int = 0
    words_distinct: int = 0
    acct_n: int = 0  # accounts with a known creation time (from the account file)
    young_n: int = 0  # ... created less than YOUNG_DAYS before their first request
    unver_n: int = 0  # accounts marked verified = false
    eu_top: int = 0  # requests of the account's busiest end-user id (the request's ``user``); max over members
    last_ts: float | None = None
    cot: int = 0
    ident: int = 0
    selfi: int = 0
    fmt: int = 0
    transl: int = 0
    single: int = 0
    lp: int = 0
    nmulti: int = 0
    hitmax: int = 0
    stream: int = 0
    sys: int = 0
    tools: int = 0
    effort: int = 0
    post: int = 0  # requests in the hours after a model release (features.pivot)
    newm: int = 0  # ... of them to the model just released
    rpt_n: int = 0  # requests with a sampled prompt (features.repeats)
    rpt: int = 0  # ... whose prompt another account sent before
    hours: list[int] = field(default_factory=lambda: [0] * 24)
    days: set[int] = field(default_factory=set)
    # sketches as arrays of unsigned 64-bit ints: 8 bytes a hash instead of a 36-byte Python int and its
    # 8-byte slot (the online detector keeps three per account and per cluster)
    kmv_ph: array = field(default_factory=lambda: array("Q"))
    kmv_pre: array = field(default_factory=lambda: array("Q"))
    kmv_suf: array = field(default_factory=lambda: array("Q"))
    set_psig: list[str] = field(default_factory=list)
    set_temp: list[str] = field(default_factory=list)
    #: the distinct words of the first WORDS_FIRST_N prompts: a set while the account is active, a tuple
    #: while it is idle (:meth:`compact_words`), None once the count is final
    _words: set[str] | tuple[str, ...] | None = field(default_factory=set, repr=False)
    #: sum of h*ln(h) over the hour bins, kept up to date by :meth:`apply` so that the hour entropy
    #: costs O(1) per score instead of a pass over the 24 bins (the online hot path)
    _hxlogx: float = field(default=0.0, repr=False, compare=False)
    #: requests per end-user id (online; created at the first id, at most EU_TRACK entries)
    _eu: dict[str, int] | None = field(default=None, repr=False, compare=False)
    #: one (count, id) entry per id of ``_eu``, its count possibly behind (a lazy min-heap: see
    #: :meth:`_count_end_user`)
    _eu_heap: list[tuple[int, str]] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._hxlogx = _sum_xlogx(self.hours)

    def update(self, ts: float, d: dict[str, Any], words: list[str] | None = None) -> tuple[float | None, int, int, int]:
        """Add one request (``d`` from :func:`~distillguard.features.derive.derive_one`) at time ``ts``.

        Returns ``(gap, words_added, distinct_words_added, eu_top)`` so that a cluster holding this
        account can apply the very same change with :meth:`apply` (cluster stats = merge of member stats).
        """
        gap = None if self.last_ts is None else ts - self.last_ts
        self.last_ts = ts
        dw = dd = 0
        if self.n < WORDS_FIRST_N and words is not None and self._words is not None:
            ws = self._words
            if ws.__class__ is tuple:  # compacted while idle: back to a set
                ws = self._words = set(ws)
            before = len(ws)
            ws.update(words)  # interned by the caller (words_of, replay): one copy of a word for all accounts
            dw, dd = len(words), len(ws) - before
            if self.n + 1 == WORDS_FIRST_N:
                self._words = None  # the count is final; free the set
        eu = d.get("end_user")
        if eu is not None:
            self._count_end_user(eu)
        self.apply(ts, d, gap, dw, dd, self.eu_top)
        return gap, dw, dd, self.eu_top

    def _count_end_user(self, eu: str) -> None:
        """Count one request of end user ``eu``; a new id beyond EU_TRACK takes the place and the count of
        the least counted one (Metwally et al.'s space-saving: a heavy id is never lost, and its count is
        over by at most the evicted count)."""
        c = self._eu
        if c is None:
            c = self._eu = {}
            self._eu_heap = []
        v = c.get(eu)
        if v is None:
            h = self._eu_heap
            v = 0
            if len(c) >= EU_TRACK:
                # the least counted id, from a heap whose counts may lag (an increment does not touch
                # it): an entry whose count is current is the true minimum, a stale one goes back with
                # its current count. O(log k) amortised instead of a scan of the k entries
                while True:
                    cnt, old = heapq.heappop(h)
                    cur = c[old]
                    if cur == cnt:
                        break
                    heapq.heappush(h, (cur, old))
                del c[old]
                v = cnt
            v += 1
            c[eu] = v
            heapq.heappush(h, (v, eu))
        else:
            v += 1
            c[eu] = v
        if v > self.eu_top:
            self.eu_top = v

    def apply(self, ts: float, d: dict[str, Any], gap: float | None, words_added: int, distinct_added: int,
              eu_top: int = 0) -> None:
        """Apply one request's change, with the gap, word counts and busiest end user's count measured on its
        own account (a cluster's busiest end user is its members' busiest: :meth:`merge` takes the max)."""
        self.n += 1
        if eu_top > self.eu_top:
            self.eu_top = eu_top
        if gap is not None:
            self.iat_n += 1
            self.iat_sum += gap
            self.iat_sum2 += gap * gap
            if gap < FAST_IAT_S:
                self.fast_n += 1
        if ts < self.t0:
            self.t0 = ts
        if ts > self.t1:
            self.t1 = ts
        self.out_tok += d["out_tok"]
        self.in_tok += d["in_tok"]
        counts = self.__dict__  # the flag counters, without getattr/setattr per flag (the online hot path)
        for c in compress(FLAG_COLUMNS, _flag_values(d)):  # only the flags set (a few of the 20), picked in C
            counts[c] += 1
        hours, hb = self.hours, int(ts // 3600) % 24
        c = hours[hb]
        hours[hb] = c + 1
        self._hxlogx += (_XLOGX[c + 1] - _XLOGX[c]) if c + 1 < _XLOGX_N else (c + 1) * math.log(c + 1) - c * math.log(c)
        if len(self.days) < MAX_DAYS:
            self.days.add(int(ts // 86400))
        # each sketch takes the value only when it is short or the value is below its largest (inlined
        # test: most requests of a busy account change no sketch)
        for kmv, k, h in ((self.kmv_ph, _K_PH, d["ph"]), (self.kmv_pre, _K_PRE, d["pre"]), (self.kmv_suf, _K_SUF, d["suf"]),
                          (self.set_psig, _K_PSIG, d["psig"]), (self.set_temp, _K_TEMP, temp_key(d["temp"]))):
            m = len(kmv)
            if m < k or h < kmv[-1]:  # keep the k smallest distinct values, sorted
                i = bisect.bisect_left(kmv, h)
                if i == m or kmv[i] != h:
                    kmv.insert(i, h)
                    if m >= k:
                        kmv.pop()
        self.words_total += words_added
        self.words_distinct += distinct_added

    def compact_words(self) -> None:
        """Keep the vocabulary of an idle account as a tuple (8 bytes a word instead of a set's 16-32;
        the words themselves are interned, shared by all accounts); :meth:`update` turns it back into
        a set if the account returns. Both ways are copies in C (microseconds for hundreds of words)."""
        if self._words.__class__ is set and self._words:
            self._words = tuple(self._words)

    def merge(self, o: "AccountStats") -> "AccountStats":
        """A new stats object for the union of two disjoint sets of requests (for clusters)."""
        m = AccountStats()
        for name in ("n", "out_tok", "in_tok", "iat_n", "iat_sum", "iat_sum2", "fast_n", "words_total", "words_distinct") + FLAG_COLUMNS + ACCOUNT_COLUMNS:
            setattr(m, name, getattr(self, name) + getattr(o, name))
        m.t0, m.t1 = min(self.t0, o.t0), max(self.t1, o.t1)
        m.eu_top = max(self.eu_top, o.eu_top)  # an end-user id is one account's customer: no sum across accounts
        m.hours = [a + b for a, b in zip(self.hours, o.hours)]
        m._hxlogx = _sum_xlogx(m.hours)
        m.days = set(list(self.days | o.days)[:MAX_DAYS])
        for name, k in KMV_K.items():
            setattr(m, name, array("Q", kmv_merge(getattr(self, name), getattr(o, name), k)))
        for name, k in SET_K.items():
            setattr(m, name, kmv_merge(getattr(self, name), getattr(o, name), k))
        m._words = None  # merged vocabulary breadth is the request-weighted mix of the members'
        return m

    def set_account(self, info: dict[str, Any] | None, first_ts: float) -> None:
        """Account-file facts of a single account, measured at its first request."""
        self.acct_n, self.young_n, self.unver_n = account_facts(info, first_ts)

    def to_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in STAT_COLUMNS + ACCOUNT_COLUMNS if name not in ("hours", "days")}
        row["hours"] = list(self.hours)
        row["days"] = sorted(self.days)
        for name in KMV_K:
            row[name] = getattr(self, name).tolist()
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "AccountStats":
        s = cls()
        for name in ACCOUNT_COLUMNS:
            setattr(s, name, int(row.get(name) or 0))
        for name in STAT_COLUMNS:
            v = row[name]
            if name == "days":
                v = set(v)
            elif name in KMV_K:
                v = array("Q", v)
            elif name.startswith("set_") or name == "hours":
                v = list(v)
            setattr(s, name, v)
        s._hxlogx = _sum_xlogx(s.hours)
        return s


STAT_COLUMNS = (
    "n", "t0", "t1", "out_tok", "in_tok", "iat_n", "iat_sum", "iat_sum2", "fast_n", "words_total", "words_distinct", "eu_top",
) + FLAG_COLUMNS + ("hours", "days") + tuple(KMV_K) + tuple(SET_K)  # fmt: skip


#: Mergeable facts from the account file (not computed from events, so not part of STAT_COLUMNS).
ACCOUNT_COLUMNS = ("acct_n", "young_n", "unver_n")
YOUNG_DAYS = 30.0


def account_facts(info: dict[str, Any] | None, first_ts: float) -> tuple[int, int, int]:
    """(known creation time, created < YOUNG_DAYS before ``first_ts``, verified is false) as 0/1.

    >>> account_facts({"created_at": 0.0, "verified": False}, 86400.0 * 3)
    (1, 1, 1)
    """
    if not info:
        return 0, 0, 0
    created = info.get("created_at")
    if isinstance(created, str):
        from distillguard.errors import RecordRejected
        from distillguard.schema import parse_timestamp

        try:
            created = parse_timestamp(created)
        except RecordRejected:
            created = None
    known = isinstance(created, (int, float))
    young = known and (first_ts - created) < YOUNG_DAYS * 86400.0
    unver = info.get("verified") is False
    return int(known), int(bool(young)), int(unver)


@functools.lru_cache(maxsize=4096)
def temp_key(temp: float | None) -> str:
    """Temperature as the text both paths compare (DuckDB's CAST of a DOUBLE rounded to 3 places)."""
    return "-" if temp is None else repr(round(float(temp), 3))


def derived_sql(events: str = "events", key: str = "account_id") -> str:
    """Derived values of every event plus the inter-arrival gap and rank within its ``key``.

    Only the first :data:`WORDS_FIRST_N` prompts of each account are kept (their head, for the
    vocabulary): the prompt text would otherwise be most of this table's size. The model-pivot flags
    come from the releases found in the whole of ``events``.
    """
    return f"""WITH _dg_pw AS ({pivot_windows_sql(events)})
SELECT * EXCLUDE (prompt), ts - lag(ts) OVER w AS iat, row_number() OVER w AS rk,
  CASE WHEN row_number() OVER w <= {WORDS_FIRST_N} THEN left(coalesce(prompt, ''), {WORDS_PROMPT_CHARS}) END AS prompt,
  {repeat_flag_sql()} AS rpt
  FROM ({pivot_flags_sql(f"({derive_sql(events)})", "_dg_pw")}) x
  WINDOW w AS (PARTITION BY {key} ORDER BY ts, request_id), {repeat_window_sql()}"""


#: Above this many events, account stats are computed in slices of accounts (by hash), so that the
#: per-account sketch states, which DuckDB cannot spill to disk, stay within its memory limit.
STATS_SLICE_EVENTS = 2_000_000


def account_stats(con: Any, events: str = "events", key: str = "account_id", *, slice_events: int | None = None) -> Any:
    """Run :func:`stats_sql` on a DuckDB connection (materialising the derived events once)."""
    import pyarrow as pa

    con.execute(f"CREATE OR REPLACE TEMP TABLE _dg_derived AS {derived_sql(events, key)}")
    try:
        n = con.execute("SELECT count(*) FROM _dg_derived").fetchall()[0][0]
        parts = max(1, math.ceil(n / (slice_events or STATS_SLICE_EVENTS)))
        if parts == 1:
            return con.sql(stats_sql("_dg_derived", key)).to_arrow_table()
        tables = [
            con.sql(stats_sql(f"(SELECT * FROM _dg_derived WHERE hash({key}) % {parts} = {i})", key)).to_arrow_table()
            for i in range(parts)
        ]
        return pa.concat_tables(tables)
    finally:
        con.execute("DROP TABLE IF EXISTS _dg_derived")


def stats_sql(derived: str = "_dg_derived", key: str = "account_id") -> str:
    """SQL computing :class:`AccountStats` columns for every ``key`` of a derived-events table."""
    flag_sums = ",\n  ".join(f"sum({c}::INTEGER)::BIGINT AS {c}" for c in FLAG_COLUMNS)
    temp_str = "CASE WHEN temp IS NULL THEN '-' ELSE CAST(round(temp, 3) AS VARCHAR) END"

    def kmv(col: str, expr: str) -> str:
        k = KMV_K[col]
        return f"""{col} AS (
  SELECT k, min(h, {k}) AS {col} FROM (SELECT DISTINCT {key} AS k, {expr} AS h FROM d) GROUP BY k
)"""

    return f"""
WITH d AS (SELECT * FROM {derived}),
base AS (
  SELECT {key} AS k, count(*)::BIGINT AS n, min(ts) AS t0, max(ts) AS t1,
  sum(out_tok)::BIGINT AS out_tok, sum(in_tok)::BIGINT AS in_tok,
  count(iat)::BIGINT AS iat_n, coalesce(sum(iat), 0.0) AS iat_sum, coalesce(sum(iat * iat), 0.0) AS iat_sum2,
  count(*) FILTER (WHERE iat < {FAST_IAT_S})::BIGINT AS fast_n,
  {flag_sums},
  FROM d GROUP BY {key}
),
days AS (
  SELECT k, list_sort(list(day))[1:{MAX_DAYS}] AS days FROM (SELECT DISTINCT {key} AS k, floor(ts / 86400)::BIGINT AS day FROM d) GROUP BY k
),
hrs AS (
  SELECT k, list_transform(range(24), lambda i: coalesce(list_extract(list_filter(hc, lambda x: x.h = i), 1).c, 0)::BIGINT) AS hours
  FROM (SELECT k, list({{'h': h, 'c': c}}) AS hc FROM (
        SELECT {key} AS k, (floor(ts / 3600)::BIGINT % 24) AS h, count(*) AS c FROM d GROUP BY ALL) GROUP BY k)
),
words AS (
  SELECT {key} AS k, unnest(regexp_extract_all(lower(left(coalesce(prompt, ''), {WORDS_PROMPT_CHARS})), '{WORD_PATTERN}')) AS w
  FROM d WHERE rk <= {WORDS_FIRST_N}
),
-- distinct words per account through a GROUP BY (spills to disk), not count(DISTINCT) (does not)
wt AS (SELECT k, sum(c)::BIGINT AS words_total, count(*)::BIGINT AS words_distinct FROM (SELECT k, w, count(*) AS c FROM words GROUP BY k, w) GROUP BY k),
eu AS (SELECT k, max(c)::BIGINT AS eu_top FROM (SELECT {key} AS k, end_user, count(*) AS c FROM d WHERE end_user IS NOT NULL GROUP BY ALL) GROUP BY k),
set_psig AS (SELECT k, min(v, {SET_K['set_psig']}) AS set_psig FROM (SELECT DISTINCT {key} AS k, psig AS v FROM d) GROUP BY k),
set_temp AS (SELECT k, min(v, {SET_K['set_temp']}) AS set_temp FROM (SELECT DISTINCT {key} AS k, {temp_str} AS v FROM d) GROUP BY k),
{kmv('kmv_ph', 'ph')},
{kmv('kmv_pre', 'pre')},
{kmv('kmv_suf', 'suf')}
SELECT base.k AS {key}, n, t0, t1, out_tok, in_tok, iat_n, iat_sum, iat_sum2, fast_n,
  coalesce(wt.words_total, 0)::BIGINT AS words_total, coalesce(wt.words_distinct, 0)::BIGINT AS words_distinct,
  coalesce(eu.eu_top, 0)::BIGINT AS eu_top,
  {', '.join(FLAG_COLUMNS)}, hrs.hours, days.days,
  list_sort(kmv_ph) AS kmv_ph, list_sort(kmv_pre) AS kmv_pre, list_sort(kmv_suf) AS kmv_suf,
  list_sort(set_psig) AS set_psig, list_sort(set_temp) AS set_temp
FROM base
LEFT JOIN hrs ON hrs.k = base.k
LEFT JOIN days ON days.k = base.k
LEFT JOIN wt ON wt.k = base.k
LEFT JOIN eu ON eu.k = base.k
LEFT JOIN set_psig ON set_psig.k = base.k
LEFT JOIN set_temp ON set_temp.k = base.k
LEFT JOIN kmv_ph ON kmv_ph.k = base.k
LEFT JOIN kmv_pre ON kmv_pre.k = base.k
LEFT JOIN kmv_suf ON kmv_suf.k = base.k
"""


#: Feature columns computed by :func:`features`, in order.
FEATURE_COLUMNS = (
    "requests", "active_days", "req_per_day", "span_hours", "tokens_out", "tokens_per_day", "out_share",
    "iat_cv", "fast_share", "hour_entropy", "param_variety", "temp_variety",
    "prompt_distinct_ratio", "prefix_distinct_ratio", "suffix_distinct_ratio", "vocab_breadth",
    "young_share", "young_accounts", "unverified_share", "pivot_share", "repeat_share", "eu_top_per_day",
) + tuple(f"{c}_share" for c in FLAG_COLUMNS)  # fmt: skip


def _list_lengths(col: Any) -> np.ndarray:
    """Length of every list of a column: an Arrow list array (vectorised) or a sequence of lists."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.asarray([len(x) for x in col], dtype=np.float64)


def _kmv_estimates(col: Any, k: int) -> np.ndarray:
    """:func:`kmv_estimate` of every sketch of a column (Arrow list array: vectorised, no Python ints)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(col, (pa.Array, pa.ChunkedArray)):
        return np.asarray([kmv_estimate(x, k) for x in col], dtype=np.float64)
    m = _list_lengths(col)
    full = m >= k
    kth = np.zeros(len(m), dtype=np.float64)
    if full.any():
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        picked = pc.list_element(col.filter(pa.array(full)), k - 1).to_numpy(zero_copy_only=False)
        kth[full] = picked.astype(np.float64)  # as float(int) rounds a uint64
    with np.errstate(divide="ignore"):
        return np.where(full, (k - 1) / (kth / _TWO64), m)


def features(cols: dict[str, Any]) -> dict[str, np.ndarray]:
    """Features from stats columns (arrays over accounts, or scalars for one account).

    ``cols`` maps every name of :data:`STAT_COLUMNS` to an array (``hours``: shape (m, 24);
    ``days``, ``kmv_*`` and ``set_*``: Arrow list arrays, or sequences of lists).
    """
    n = np.asarray(cols["n"], dtype=np.float64)
    safe_n = np.maximum(n, 1.0)
    days = _list_lengths(cols["days"])
    out_tok = np.asarray(cols["out_tok"], dtype=np.float64)
    in_tok = np.asarray(cols["in_tok"], dtype=np.float64)
    iat_n = np.asarray(cols["iat_n"], dtype=np.float64)
    iat_sum = np.asarray(cols["iat_sum"], dtype=np.float64)
    iat_sum2 = np.asarray(cols["iat_sum2"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(iat_n > 0, iat_sum / np.maximum(iat_n, 1), np.nan)
        var = np.where(iat_n > 1, iat_sum2 / np.maximum(iat_n, 1) - mean * mean, np.nan)
        iat_cv = np.where(mean > 0, np.sqrt(np.maximum(var, 0.0)) / mean, np.nan)
        hours = np.asarray(cols["hours"], dtype=np.float64).reshape(-1, 24)
        p = hours / np.maximum(hours.sum(axis=1, keepdims=True), 1.0)
        ent = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(axis=1) / math.log(24)
        words_total = np.asarray(cols["words_total"], dtype=np.float64)
        out = {
            "requests": n,
            "active_days": days,
            "req_per_day": n / np.maximum(days, 1.0),
            "span_hours": (np.asarray(cols["t1"], dtype=np.float64) - np.asarray(cols["t0"], dtype=np.float64)) / 3600.0,
            "tokens_out": out_tok,
            "tokens_per_day": (out_tok + in_tok) / np.maximum(days, 1.0),
            "out_share": np.where(out_tok + in_tok > 0, out_tok / np.maximum(out_tok + in_tok, 1.0), np.nan),
            "iat_cv": iat_cv,
            "fast_share": np.where(iat_n > 0, np.asarray(cols["fast_n"], dtype=np.float64) / np.maximum(iat_n, 1), np.nan),
            "hour_entropy": ent,
            "param_variety": _list_lengths(cols["set_psig"]),
            "temp_variety": _list_lengths(cols["set_temp"]),
            "prompt_distinct_ratio": np.minimum(1.0, _kmv_estimates(cols["kmv_ph"], KMV_K["kmv_ph"]) / safe_n),
            "prefix_distinct_ratio": np.minimum(1.0, _kmv_estimates(cols["kmv_pre"], KMV_K["kmv_pre"]) / safe_n),
            "suffix_distinct_ratio": np.minimum(1.0, _kmv_estimates(cols["kmv_suf"], KMV_K["kmv_suf"]) / safe_n),
            "vocab_breadth": np.where(
                words_total >= 20, np.asarray(cols["words_distinct"], dtype=np.float64) / np.maximum(words_total, 1.0), np.nan
            ),
        }
        m = len(n)
        acct = np.asarray(cols.get("acct_n", np.zeros(m)), dtype=np.float64)
        young = np.asarray(cols.get("young_n", np.zeros(m)), dtype=np.float64)
        out["young_share"] = young / np.maximum(acct, 1.0)
        out["young_accounts"] = young
        out["unverified_share"] = np.asarray(cols.get("unver_n", np.zeros(m)), dtype=np.float64) / np.maximum(acct, 1.0)
        post = np.asarray(cols["post"], dtype=np.float64)
        out["pivot_share"] = np.where(post >= PIVOT_MIN_POST, np.asarray(cols["newm"], dtype=np.float64) / np.maximum(post, 1.0), np.nan)
        rpt_n = np.asarray(cols["rpt_n"], dtype=np.float64)
        out["repeat_share"] = np.where(rpt_n >= REPEAT_MIN_SAMPLED, np.asarray(cols["rpt"], dtype=np.float64) / np.maximum(rpt_n, 1.0), np.nan)
        out["eu_top_per_day"] = np.asarray(cols["eu_top"], dtype=np.float64) / np.maximum(days, 1.0)
        for c in FLAG_COLUMNS:
            out[f"{c}_share"] = np.asarray(cols[c], dtype=np.float64) / safe_n
    return out


def features_of(stats: AccountStats) -> dict[str, float]:
    """Features of one account's stats through the vectorised function (reference for :func:`features_scalar`)."""
    row = stats.to_row()
    cols = {k: ([v] if k in ("hours", "days") or k.startswith(("kmv_", "set_")) else np.asarray([v])) for k, v in row.items()}
    return {k: float(v[0]) for k, v in features(cols).items()}


def _iat_cv(s: AccountStats) -> float:
    if s.iat_n <= 0:
        return math.nan
    mean = s.iat_sum / s.iat_n
    if s.iat_n > 1 and mean > 0:
        var = s.iat_sum2 / s.iat_n - mean * mean
        return math.sqrt(max(var, 0.0)) / mean
    return math.nan


def _hour_entropy(s: AccountStats) -> float:
    """Entropy of the 24-bin hour histogram over ln 24: (ln T - sum(h ln h) / T) / ln 24, T the total."""
    total = sum(s.hours)
    if total <= 0:
        return 0.0
    return max(0.0, math.log(total) - s._hxlogx / total) / _LN24


_LN24 = math.log(24)


#: Each feature of one stats object ``s`` as a Python expression. :data:`SCALAR_FEATURES` compiles each
#: into a function, and :meth:`~distillguard.detect.scoring.ScoreModel.stats_scorer` inlines the ones a
#: model weighs into one generated function (the online hot path: one call per request, not one per feature).
SCALAR_FEATURE_EXPRS: dict[str, str] = {
    "requests": "float(s.n)",
    "active_days": "float(len(s.days))",
    "req_per_day": "s.n / max(float(len(s.days)), 1.0)",
    "span_hours": "(s.t1 - s.t0) / 3600.0",
    "tokens_out": "float(s.out_tok)",
    "tokens_per_day": "(s.out_tok + s.in_tok) / max(float(len(s.days)), 1.0)",
    "out_share": "(s.out_tok / max(s.out_tok + s.in_tok, 1.0) if s.out_tok + s.in_tok > 0 else nan)",
    "iat_cv": "_iat_cv(s)",
    "fast_share": "(s.fast_n / s.iat_n if s.iat_n > 0 else nan)",
    "hour_entropy": "_hour_entropy(s)",
    "param_variety": "float(len(s.set_psig))",
    "temp_variety": "float(len(s.set_temp))",
    "prompt_distinct_ratio": f"min(1.0, kmv_estimate(s.kmv_ph, {KMV_K['kmv_ph']}) / max(float(s.n), 1.0))",
    "prefix_distinct_ratio": f"min(1.0, kmv_estimate(s.kmv_pre, {KMV_K['kmv_pre']}) / max(float(s.n), 1.0))",
    "suffix_distinct_ratio": f"min(1.0, kmv_estimate(s.kmv_suf, {KMV_K['kmv_suf']}) / max(float(s.n), 1.0))",
    "vocab_breadth": "(s.words_distinct / max(s.words_total, 1.0) if s.words_total >= 20 else nan)",
    "young_share": "s.young_n / max(s.acct_n, 1.0)",
    "young_accounts": "float(s.young_n)",
    "unverified_share": "s.unver_n / max(s.acct_n, 1.0)",
    "pivot_share": f"(s.newm / s.post if s.post >= {PIVOT_MIN_POST} else nan)",
    "repeat_share": f"(s.rpt / s.rpt_n if s.rpt_n >= {REPEAT_MIN_SAMPLED} else nan)",
    "eu_top_per_day": "s.eu_top / max(float(len(s.days)), 1.0)",
    **{f"{c}_share": f"s.{c} / max(float(s.n), 1.0)" for c in FLAG_COLUMNS},
}
#: What the expressions may refer to besides ``s``.
SCALAR_NAMESPACE: dict[str, Any] = {"nan": math.nan, "_iat_cv": _iat_cv, "_hour_entropy": _hour_entropy, "kmv_estimate": kmv_estimate}

#: Each feature of one stats object, in plain Python.
SCALAR_FEATURES: dict[str, Callable[[AccountStats], float]] = {
    name: eval(f"lambda s: {expr}", dict(SCALAR_NAMESPACE)) for name, expr in SCALAR_FEATURE_EXPRS.items()  # noqa: S307 (our own source)
}
assert tuple(SCALAR_FEATURES) == FEATURE_COLUMNS


def features_scalar(s: AccountStats) -> dict[str, float]:
    """The same numbers as :func:`features` for one stats object, in plain Python (the online path)."""
    return {name: f(s) for name, f in SCALAR_FEATURES.items()}
