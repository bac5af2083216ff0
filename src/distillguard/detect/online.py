"""The online detector: the same features and thresholds as ``scan``, one request at a time.

Interface (used by the gateway, ``replay`` and the LiteLLM plugin)::

    det = OnlineDetector(accounts=None)          # accounts: optional {account_id: account-file row}
    verdict = det.process(event)                 # event: dict from schema.event_from_record()
    verdict.account_id, verdict.score, verdict.flagged, verdict.cluster_id, verdict.reasons

``process`` = ``learn_one`` then ``score_one`` then the threshold. Being built: this first version
keeps per-account counters only and never flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    account_id: str
    score: float
    flagged: bool
    cluster_id: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)


class OnlineDetector:
    def __init__(self, *, accounts: dict[str, dict] | None = None):
        self.accounts = accounts or {}
        self._counts: dict[str, int] = {}

    def learn_one(self, event: dict[str, Any]) -> None:
        aid = event["account_id"]
        self._counts[aid] = self._counts.get(aid, 0) + 1

    def score_one(self, event: dict[str, Any]) -> float:
        return 0.0

    def process(self, event: dict[str, Any]) -> Verdict:
        self.learn_one(event)
        return Verdict(account_id=event["account_id"], score=self.score_one(event), flagged=False)
