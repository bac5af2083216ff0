"""Model releases seen in the traffic, and the per-request flags of the model-pivot signal.

A campaign that extracts the current model moves a large share of its traffic to a newly released
model within hours of the release (the February 2026 disclosure: half the traffic within 24 hours);
customers adopt a new model over days. The log itself tells when a model was released: the first
hour, after the log's first :data:`ESTABLISHED_H` hours, in which a model that so far carried almost
nothing (< :data:`RELEASE_MAX_PRIOR_SHARE` of all earlier requests) carries at least
:data:`RELEASE_MIN_HOURLY` requests and :data:`RELEASE_MIN_SHARE` of that hour's traffic. A few
early-access requests before the release do not make a model established, and a model in use from
the start is never new.

Every request then gets two flags: ``post`` (sent in the :data:`PIVOT_WINDOW_H` hours after some
release, starting with the hour after the release hour) and ``newm`` (``post`` and sent to the
model released). An account's pivot share is ``newm / post``.

Releases are decided on whole hours, in time order, so that the batch SQL (:func:`pivot_flags_sql`),
Spark (``engine/spark.py``) and the online tracker (:class:`ReleaseTracker`) give every request the
same flags when the online one sees the log in time order.

>>> t = ReleaseTracker()
>>> hour = 3600.0
>>> flags = [t.observe(h * hour + i, "old") for h in range(30) for i in range(50)]
>>> [t.observe(30 * hour + i, "new") for i in range(30)][-1]  # the release hour itself: not yet
(False, False)
>>> t.observe(31 * hour, "new"), t.observe(31 * hour + 1, "old"), t.releases
((True, True), (True, False), {'new': 30})
"""

from __future__ import annotations

import math

#: A model seen in the log's first day is in use already, not released inside the log.
ESTABLISHED_H = 24
#: Release hour: the model carries at least this many requests ...
RELEASE_MIN_HOURLY = 20
#: ... and at least this share of the hour's requests ...
RELEASE_MIN_SHARE = 0.02
#: ... having carried less than this share of all earlier requests (early access is not a release).
RELEASE_MAX_PRIOR_SHARE = 0.005
#: Hours after the release hour in which traffic counts towards the pivot share.
PIVOT_WINDOW_H = 48
#: Fewer requests than this in release windows: the pivot share is not measured (NaN).
PIVOT_MIN_POST = 10


def releases_sql(events: str) -> str:
    """SQL of (model, h): the release hour (``floor(ts / 3600)``) of each model released inside the log."""
    return f"""
WITH hm AS (SELECT floor(ts / 3600)::BIGINT AS h, model, count(*) AS c FROM {events} GROUP BY ALL),
hours AS (SELECT h, sum(c) AS ch FROM hm GROUP BY h),
hcum AS (SELECT h, ch, coalesce(sum(ch) OVER (ORDER BY h ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS cab FROM hours),
mcum AS (SELECT h, model, c, coalesce(sum(c) OVER (PARTITION BY model ORDER BY h ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS cb
         FROM hm WHERE model IS NOT NULL)
SELECT model, min(h) AS h FROM mcum JOIN hcum USING (h)
WHERE h >= (SELECT min(h) FROM hours) + {ESTABLISHED_H}
  AND c >= {RELEASE_MIN_HOURLY} AND c >= {RELEASE_MIN_SHARE} * ch AND cb < {RELEASE_MAX_PRIOR_SHARE} * cab
GROUP BY model"""


def pivot_windows_sql(events: str) -> str:
    """SQL of (model, h) for every hour ``h`` inside a release window of ``model``."""
    return f"""SELECT DISTINCT model, r.h + i AS h FROM ({releases_sql(events)}) r, range(1, {PIVOT_WINDOW_H + 1}) t(i)"""


def pivot_flags_sql(derived: str, windows: str) -> str:
    """``derived`` (rows with ``ts`` and ``model``) plus the boolean columns ``post`` and ``newm``."""
    return f"""SELECT d.*, ph.h IS NOT NULL AS post, nm.h IS NOT NULL AS newm
FROM {derived} d
LEFT JOIN (SELECT DISTINCT h FROM {windows}) ph ON ph.h = floor(d.ts / 3600)::BIGINT
LEFT JOIN {windows} nm ON nm.model = d.model AND nm.h = floor(d.ts / 3600)::BIGINT"""


class ReleaseTracker:
    """Online twin of :func:`releases_sql`: hourly counts per model, and the releases found so far.

    Events are expected in time order; a late event is counted in the current hour.
    """

    def __init__(self) -> None:
        self.first_h: int | None = None
        self.hour: int | None = None
        self._counts: dict[str | None, int] = {}
        self._total = 0
        self._cum: dict[str, int] = {}
        self._cum_total = 0
        self.releases: dict[str, int] = {}

    def _close_hour(self) -> None:
        assert self.hour is not None and self.first_h is not None
        if self.hour >= self.first_h + ESTABLISHED_H:
            for m, c in self._counts.items():
                if (m is not None and m not in self.releases and c >= RELEASE_MIN_HOURLY and c >= RELEASE_MIN_SHARE * self._total
                        and self._cum.get(m, 0) < RELEASE_MAX_PRIOR_SHARE * self._cum_total):
                    self.releases[m] = self.hour
        for m, c in self._counts.items():
            if m is not None:
                self._cum[m] = self._cum.get(m, 0) + c
        self._cum_total += self._total
        self._counts, self._total = {}, 0

    def observe(self, ts: float, model: str | None) -> tuple[bool, bool]:
        """Count one request and return its ``(post, newm)`` flags."""
        h = math.floor(ts / 3600)
        if self.hour is None:
            self.first_h = self.hour = h
        elif h > self.hour:
            self._close_hour()
            self.hour = h
        post = newm = False
        for m, r in self.releases.items():
            if r < h <= r + PIVOT_WINDOW_H:
                post = True
                if m == model:
                    newm = True
        self._counts[model] = self._counts.get(model, 0) + 1
        self._total += 1
        return post, newm
