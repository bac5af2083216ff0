"""The busiest end user of an account (signal heavy_end_user): batch and online count the same, the
online table stays bounded, and only an account whose one customer sends bulk traffic scores."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone

import numpy as np

import distillguard.features.stats as stats_mod
from distillguard.detect.signals import strengths, strengths_scalar
from distillguard.features.derive import derive_one, words_of
from distillguard.features.stats import AccountStats, account_stats, features_of, features_scalar
from distillguard.ingest import load_events
from distillguard.ingest.reader import connect

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _record(i: int, account: str, ts: float, user: str | None) -> dict:
    req = {"model": "m", "messages": [{"role": "user", "content": f"question {i} about topic {i % 13}"}]}
    if user is not None:
        req["user"] = user
    return {"request_id": f"r{i}", "timestamp": f"{ts:.3f}", "account_id": account, "endpoint": "/v1/chat/completions",
            "request": req, "response": {"choices": [{"message": {"content": "an answer"}, "finish_reason": "stop"}],
                                         "usage": {"prompt_tokens": 9, "completion_tokens": 3}}}


def _reseller_log(path, *, heavy: bool) -> None:
    """Five days of a reseller: 60 customers of about 4 requests a day each; with ``heavy``, one more
    customer sends 60 a day."""
    rng = np.random.default_rng(3)
    recs, i = [], 0
    for day in range(5):
        for u in range(60):
            for _ in range(4):
                recs.append(_record(i, "org-reseller", T0 + day * 86400 + float(rng.uniform(0, 86000)), f"cust-{u}"))
                i += 1
        if heavy:
            for _ in range(60):
                recs.append(_record(i, "org-reseller", T0 + day * 86400 + float(rng.uniform(0, 86000)), "cust-x"))
                i += 1
        for _ in range(20):  # requests without an end-user id count for the account, not for a customer
            recs.append(_record(i, "org-reseller", T0 + day * 86400 + float(rng.uniform(0, 86000)), None))
            i += 1
    recs.sort(key=lambda r: float(r["timestamp"]))
    for r in recs:
        r["timestamp"] = datetime.fromtimestamp(float(r["timestamp"]), tz=timezone.utc).isoformat().replace("+00:00", "Z")
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)


def _batch_and_online(path):
    events = load_events([path])
    con = connect()
    con.register("events", events)
    batch = account_stats(con, "events").to_pylist()[0]
    online = AccountStats()
    for ev in sorted(events.to_pylist(), key=lambda e: (e["ts"], e["request_id"])):
        online.update(ev["ts"], derive_one(ev), words_of(ev["prompt"]) if online.n < 64 else None)
    return batch, online


def test_one_heavy_customer_behind_a_reseller_scores_and_the_others_do_not(tmp_path):
    results = {}
    for heavy in (False, True):
        path = tmp_path / f"heavy-{heavy}.jsonl.gz"
        _reseller_log(path, heavy=heavy)
        batch, online = _batch_and_online(path)
        assert batch["eu_top"] == online.eu_top
        feats = features_scalar(online)
        vec = strengths({k: np.asarray([v]) for k, v in features_of(AccountStats.from_row(batch)).items()})  # the batch path
        assert float(vec["heavy_end_user"][0]) == strengths_scalar(feats)["heavy_end_user"]
        results[heavy] = (online.eu_top, feats["eu_top_per_day"], strengths_scalar(feats)["heavy_end_user"])
    # the busiest of 60 customers sends about 4 a day, on the order of 20 in five days: no signal
    assert results[False][0] < 40 and results[False][2] == 0.0
    # one customer at 60 a day: full strength
    assert results[True][0] == 300 and results[True][1] == 60.0 and results[True][2] == 1.0


def test_online_end_user_table_is_bounded_and_keeps_the_heavy_id(monkeypatch):
    monkeypatch.setattr(stats_mod, "EU_TRACK", 8)
    s = AccountStats()
    d = derive_one({"prompt": "x", "completion_tokens": 1, "n_assistant_msgs": 0})
    n = 0
    for i in range(400):
        for user in (f"light-{i}", "heavy" if i % 2 == 0 else f"light-b{i}"):
            s.update(float(n), {**d, "end_user": user})
            n += 1
    assert len(s._eu) <= 8
    # space-saving: the heavy id (200 requests) is never evicted, over by at most n / table size
    assert 200 <= s._eu["heavy"] == s.eu_top <= 200 + n // 8
    # below the table size the count is exact
    exact = AccountStats()
    for i in range(30):
        exact.update(float(i), {**d, "end_user": f"u{i % 5}"})
    assert exact.eu_top == 6 and sorted(exact._eu.values()) == [6] * 5


def test_space_saving_invariants_hold_on_a_skewed_stream(monkeypatch):
    """The lazy-heap eviction keeps the space-saving guarantees: counts sum to the requests seen, and
    every tracked id's count is at least its true count and over by at most requests / table size."""
    import collections
    import random

    monkeypatch.setattr(stats_mod, "EU_TRACK", 16)
    rng = random.Random(7)
    s = AccountStats()
    d = derive_one({"prompt": "x", "completion_tokens": 1, "n_assistant_msgs": 0})
    true = collections.Counter()
    for n in range(3000):
        user = f"u{int(rng.paretovariate(1.1))}"  # a few heavy ids, a long tail of light ones
        true[user] += 1
        s.update(float(n), {**d, "end_user": user})
        if n % 97 == 0 or n == 2999:
            assert len(s._eu) <= 16 and sum(s._eu.values()) == n + 1
            assert sorted(i for _, i in s._eu_heap) == sorted(s._eu)  # one heap entry per tracked id
            for uid, est in s._eu.items():
                assert true[uid] <= est <= true[uid] + (n + 1) // 16
            assert s.eu_top == max(s._eu.values())
    heaviest, count = true.most_common(1)[0]
    assert heaviest in s._eu and s._eu[heaviest] >= count
