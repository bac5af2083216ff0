"""Prompts already sent by another account: the shared-prompt signal.

Extraction campaigns draw their prompts from public prompt sets (instruction datasets, shared chat
logs, benchmark questions), which other campaigns and accounts send too; a customer's traffic is
mostly its own. A request is a *repeat* when an identical prompt (the same 64-bit hash of its first
``SCAN_CHARS`` characters) was sent earlier, in time order, by a different account.

Tracking every distinct prompt would need memory in proportion to the traffic, so only a fixed
sample of prompts is tracked: those whose hash is divisible by :data:`REPEAT_SAMPLE` (the same
prompts in every engine), and only prompts of at least :data:`REPEAT_MIN_CHARS` characters ("hi"
is not a data set). Per request, ``rpt_n`` says it is sampled and ``rpt`` that it is a repeat; an
account's shared-prompt share is ``rpt / rpt_n``.

The batch SQL (:func:`repeat_flag_sql`, a window over each prompt hash) and the online
:class:`RepeatTracker` (first account and "several accounts" per sampled hash) give every request the
same flag when the online one sees the log in time order.

>>> t = RepeatTracker()
>>> t.observe(8, "a"), t.observe(8, "a"), t.observe(8, "b"), t.observe(8, "a")
(False, False, True, True)
"""

from __future__ import annotations

#: One prompt hash in this many is tracked (bounds the online detector's memory to the distinct
#: sampled prompts; about 150 bytes each).
REPEAT_SAMPLE = 8
assert REPEAT_SAMPLE & (REPEAT_SAMPLE - 1) == 0, "a power of two: Spark tests the low bits of its signed hash key"
#: Shorter prompts are never counted.
REPEAT_MIN_CHARS = 40
#: Fewer sampled requests than this: the share is not measured (NaN).
REPEAT_MIN_SAMPLED = 5


def sampled_sql(ph: str = "ph", prompt: str = "prompt") -> str:
    """SQL of the per-request ``rpt_n`` flag (twin of the flag in ``derive_one``)."""
    return f"({ph} % {REPEAT_SAMPLE} = 0 AND length(coalesce({prompt}, '')) >= {REPEAT_MIN_CHARS})"


def repeat_flag_sql() -> str:
    """SQL expression of ``rpt`` over rows with ``rpt_n``, ``ph``, ``account_id``, ``ts``, ``request_id``
    (uses the window ``wp``: see :func:`repeat_window_sql`)."""
    return ("coalesce(rpt_n AND (min(account_id) OVER wp <> account_id OR max(account_id) OVER wp <> account_id), false)")


def repeat_window_sql() -> str:
    return "wp AS (PARTITION BY rpt_n, ph ORDER BY ts, request_id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"


#: The online tracker forgets the prompts first seen longest ago beyond this many (about 150 MB);
#: up to then it flags exactly what the batch query flags.
REPEAT_MAX_TRACKED = 1_000_000


class RepeatTracker:
    """Online twin of :func:`repeat_flag_sql`: per sampled prompt hash, its first account and whether
    another account has sent it too. Bounded: beyond ``max_tracked`` prompts the oldest is forgotten.

    >>> t = RepeatTracker(max_tracked=2)
    >>> t.observe(8, "a"), t.observe(16, "a"), t.observe(24, "a"), t.observe(8, "b"), len(t)
    (False, False, False, False, 2)
    """

    def __init__(self, max_tracked: int = REPEAT_MAX_TRACKED) -> None:
        self._first: dict[int, str] = {}
        self._several: set[int] = set()
        self.max_tracked = max_tracked

    def observe(self, ph: int, account_id: str) -> bool:
        """Record one sampled request (``rpt_n`` true) and return its ``rpt`` flag."""
        first = self._first.get(ph)
        if first is None:
            self._first[ph] = account_id
            if len(self._first) > self.max_tracked:
                oldest = next(iter(self._first))
                del self._first[oldest]
                self._several.discard(oldest)
            return False
        if first != account_id:
            self._several.add(ph)
            return True
        return ph in self._several

    def __len__(self) -> int:
        return len(self._first)
