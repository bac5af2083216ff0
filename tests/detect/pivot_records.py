"""Traffic-log records with a model released inside the log (for the model-pivot tests)."""

from __future__ import annotations

import random

BASE = 1767225600.0  # 2026-01-01T00:00:00Z, an hour boundary
RELEASE_HOUR = 40


def pivot_records(seed: int = 3, hours: int = 80) -> list[dict]:
    """Users on ``m-large``; a few early-access requests to ``m-new`` in hour 1; ``m-new`` released in hour
    40 (then carried by the ``pivot-*`` accounts at about half their traffic, by users at about a tenth);
    ``m-rare`` busy in hour 2 only (in use from the first day: never a release); requests without a model;
    timestamps with ties; a shared set of prompts that several accounts send."""
    rng = random.Random(seed)
    recs: list[dict] = []

    def add(account: str, ts: float, model: str | None) -> None:
        # some prompts from a shared set, long enough to count as shared prompts (features.repeats)
        text = (f"Explain in detail how item {rng.randint(0, 60)} of the shared prompt set works." if rng.random() < 0.3
                else f"question {rng.randint(0, 10**6)}")
        req: dict = {"messages": [{"role": "user", "content": text}]}
        if model is not None:
            req["model"] = model
        recs.append({"request_id": f"p{len(recs):06d}", "timestamp": round(ts, 1), "account_id": account,
                     "endpoint": "/v1/chat/completions", "request": req,
                     "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 7}}})

    for h in range(hours):
        t0 = BASE + h * 3600
        for _ in range(rng.randint(25, 45)):
            model = "m-new" if h > RELEASE_HOUR and rng.random() < 0.1 else ("m-large" if rng.random() < 0.97 else None)
            add(f"user-{rng.randint(0, 5)}", t0 + rng.uniform(0, 3600), model)
        if h == 1:
            for _ in range(3):
                add("user-0", t0 + rng.uniform(0, 3600), "m-new")
        if h == 2:
            for _ in range(25):
                add("user-1", t0 + rng.uniform(0, 3600), "m-rare")
        if h == RELEASE_HOUR:
            for _ in range(30):
                add(f"pivot-{rng.randint(0, 2)}", t0 + rng.uniform(1800, 3600), "m-new")
        if h >= RELEASE_HOUR - 10:
            for _ in range(rng.randint(3, 8)):
                model = "m-new" if h > RELEASE_HOUR and rng.random() < 0.5 else "m-large"
                add(f"pivot-{rng.randint(0, 2)}", t0 + rng.uniform(0, 3600), model)
    # ties: copies of some timestamps
    for r in rng.sample(recs, 40):
        add(r["account_id"], r["timestamp"], r["request"].get("model"))
    return recs
