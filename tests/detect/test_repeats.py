"""Shared prompts: the batch window and the online tracker flag the same requests."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa

from distillguard.features.derive import derive_one
from distillguard.features.repeats import REPEAT_MIN_CHARS, REPEAT_SAMPLE, RepeatTracker
from distillguard.features.stats import account_stats, derived_sql
from distillguard.schema import EVENT_SCHEMA, event_from_record


def _events(seed: int = 5, n: int = 4000) -> list[dict]:
    rng = random.Random(seed)
    pool = [f"Explain in detail how item number {i} of the shared prompt set works." for i in range(300)]
    recs = []
    for i in range(n):
        acct = f"a{rng.randint(0, 30)}"
        if acct in ("a0", "a1", "a2"):  # own prompts only
            prompt = f"{acct} private question {i} about our own product, long enough to count."
        elif rng.random() < 0.1:
            prompt = "hi"  # short: never counted
        else:
            prompt = rng.choice(pool)
        recs.append(event_from_record({
            "request_id": f"r{i:05d}", "timestamp": 1767225600 + rng.randint(0, 5000),  # many ties
            "account_id": acct, "endpoint": "/v1/chat/completions",
            "request": {"model": "m", "messages": [{"role": "user", "content": prompt}]}}))
    return recs


def test_batch_repeat_flags_equal_online():
    events = _events()
    con = duckdb.connect()
    con.register("events", pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    rows = con.sql(f"SELECT request_id, rpt_n, rpt FROM ({derived_sql('events')})").fetchall()
    batch = {r: (n, f) for r, n, f in rows}
    tracker = RepeatTracker()
    flagged = sampled = 0
    for ev in sorted(events, key=lambda e: (e["ts"], e["request_id"])):
        d = derive_one(ev)
        rpt = tracker.observe(d["ph"], ev["account_id"]) if d["rpt_n"] else False
        assert (d["rpt_n"], rpt) == batch[ev["request_id"]], ev["request_id"]
        sampled += d["rpt_n"]
        flagged += rpt
    assert 0 < flagged < sampled < len(events) / 2  # a sample, with repeats and first sendings
    assert len(tracker) <= len({e["prompt"] for e in events}) / REPEAT_SAMPLE * 2


def test_own_and_short_prompts_are_never_repeats():
    events = _events()
    con = duckdb.connect()
    con.register("events", pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    stats = {r["account_id"]: r for r in account_stats(con, "events").to_pylist()}
    for a in ("a0", "a1", "a2"):
        assert stats[a]["rpt"] == 0
    shared = [r["rpt"] / r["rpt_n"] for a, r in stats.items() if a not in ("a0", "a1", "a2") and r["rpt_n"] >= 5]
    assert shared and min(shared) > 0.5
    assert len("hi") < REPEAT_MIN_CHARS
