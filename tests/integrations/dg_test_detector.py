"""A deterministic detector for the LiteLLM plugin tests: flags an account from its K-th request."""

from __future__ import annotations

import os

from distillguard.detect.online import OnlineDetector, Verdict


class FlagAfterK(OnlineDetector):
    def __init__(self, *, accounts: dict | None = None, k: int | None = None):
        super().__init__(accounts=accounts)
        self.k = k or int(os.environ.get("DG_TEST_FLAG_AFTER", "3"))
        self.seen: dict[str, int] = {}

    def process(self, event: dict) -> Verdict:
        aid = event["account_id"]
        self.seen[aid] = self.seen.get(aid, 0) + 1
        flagged = self.seen[aid] >= self.k
        return Verdict(account_id=aid, score=0.99 if flagged else 0.0, flagged=flagged)
