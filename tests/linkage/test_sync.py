"""Synchronised activity: one orchestrator's accounts share MinHash bands of their five-minute windows."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pytest

from distillguard.detect.online import OnlineDetector
from distillguard.linkage.graph import EDGE_MIN_WEIGHT, clusters_from_edges, compute_edges
from distillguard.linkage.sync import SYNC_BUCKET_S, SYNC_MIN_BUCKETS, ActivitySignature, sync_keys_sql
from distillguard.schema import event_from_record

DAY = 86400.0
T0 = 1_767_225_600.0  # 2026-01-01, on a bucket boundary


def _traffic(seed: int = 3) -> tuple[list[dict], dict[str, dict]]:
    """8 accounts of one orchestrator (bursts at the same 60 moments over four days, each account in ~90%
    of them; one user agent; created in the same hour), 40 independent accounts with 60 bursts each of
    their own (each its own user agent; created weeks apart), 2 always-on accounts (every five minutes)."""
    rng = random.Random(seed)
    rows, accounts = [], {}

    def req(acc: str, ts: float, ua: str, k: int) -> None:
        rows.append({"request_id": f"{acc}-{k}", "ts": ts, "account_id": acc, "client_ip": f"10.{len(accounts)}.0.1",
                     "user_agent": ua, "temperature": 0.7, "max_tokens": 1024, "n": 1, "stream": False,
                     "logprobs": False, "prompt": f"question {k} from {acc}"})

    bursts = sorted(rng.uniform(0, 4 * DAY) for _ in range(60))
    for i in range(8):
        acc = f"orch{i}"
        accounts[acc] = {"created_at": T0 - 2 * DAY + 60 * i}
        k = 0
        for b in bursts:
            if rng.random() < 0.9:
                for _ in range(rng.randint(1, 3)):
                    req(acc, T0 + b + rng.uniform(0, 60), "python-httpx/0.27.0", k)
                    k += 1
    for i in range(40):
        acc = f"ind{i:02d}"
        accounts[acc] = {"created_at": T0 - (30 + 7 * i) * DAY}
        for k, b in enumerate(sorted(rng.uniform(0, 4 * DAY) for _ in range(60))):
            req(acc, T0 + b, f"python-httpx/0.27.0 app{i}", k)
    for i in range(2):
        acc = f"on{i}"
        accounts[acc] = {"created_at": T0 - 400 * DAY}
        for k in range(int(DAY // SYNC_BUCKET_S)):
            req(acc, T0 + k * SYNC_BUCKET_S + 10, "python-httpx/0.27.0", k)
    rows.sort(key=lambda r: (r["ts"], r["request_id"]))
    return rows, accounts


def _con(rows: list[dict], accounts: dict[str, dict]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    cols = ["request_id", "ts", "account_id", "client_ip", "user_agent", "temperature", "max_tokens", "n", "stream",
            "logprobs", "prompt"]
    con.register("t", pa.table({c: [r[c] for r in rows] for c in cols}))
    con.execute("CREATE TABLE events AS SELECT *, NULL::VARCHAR AS system_prompt, NULL::DOUBLE AS top_p FROM t")
    con.register("a", pa.table({"account_id": list(accounts), "created_at": [v["created_at"] for v in accounts.values()],
                                "payment_fingerprint": [None] * len(accounts), "email_domain": [None] * len(accounts)},
                               schema=pa.schema([("account_id", pa.string()), ("created_at", pa.float64()),
                                                 ("payment_fingerprint", pa.string()), ("email_domain", pa.string())])))
    con.execute("CREATE TABLE accounts AS SELECT * FROM a")
    con.execute("CREATE TABLE ta (account_id VARCHAR, pre UBIGINT)")
    return con


@pytest.mark.parametrize("start", [T0, -1e6])  # Python's and DuckDB's modulo differ below zero
def test_batch_and_online_signatures_agree_on_the_same_buckets(start):
    rng = random.Random(1)
    ts = sorted(start + SYNC_BUCKET_S * b + 5 for b in rng.sample(range(2000), SYNC_MIN_BUCKETS))
    sig = ActivitySignature()
    online = [v for t in ts for v in sig.add(t)]  # emitted once, at the SYNC_MIN_BUCKETS-th bucket
    con = duckdb.connect()
    con.execute("CREATE TABLE ev AS SELECT 'a' AS account_id, unnest($ts)::DOUBLE AS ts", {"ts": ts})
    batch = [r[0] for r in con.execute(f"SELECT value FROM ({sync_keys_sql('ev')}) ORDER BY value").fetchall()]
    assert len(online) == 4 and sorted(online) == batch


def test_orchestrated_accounts_share_bands_and_independent_or_always_on_ones_do_not():
    rows, accounts = _traffic()
    con = _con(rows, accounts)
    keys = con.execute(f"SELECT account_id, value FROM ({sync_keys_sql('events')})").fetchall()
    holders: dict[str, set[str]] = {}
    for acc, v in keys:
        holders.setdefault(v, set()).add(acc)
    assert not any(a.startswith("on") for a, _ in keys)  # always on: no pattern to compare
    shared = [h for h in holders.values() if len(h) > 1]
    assert shared and all(all(a.startswith("orch") for a in h) for h in shared)
    # most orchestrated pairs share a band (the Jaccard of two accounts that each miss 10% of the bursts
    # is about 0.8; a band matches with probability 0.8 ** 5)
    pairs = {(a, b) for h in shared for a in h for b in h if a < b}
    assert len(pairs) >= 0.6 * 28


def test_synchronised_activity_plus_a_wave_and_a_user_agent_make_one_cluster_in_batch_and_online():
    rows, accounts = _traffic()
    con = _con(rows, accounts)
    edges = compute_edges(con, events="events", accounts="accounts", template_accounts="ta")
    sync = [e for e in edges.to_pylist() if e["type"] == "sync_timing"]
    assert sync and all(e["src"].startswith("orch") and e["dst"].startswith("orch") for e in sync)
    clusters = clusters_from_edges(edges)
    orch = {clusters.get(f"orch{i}") for i in range(8)}
    assert len(orch) == 1 and None not in orch
    assert not any(a.startswith(("ind", "on")) for a in clusters)
    # the same accounts without the synchronised activity are not linked: wave + user agent is 0.7
    without: dict[tuple[str, str], float] = {}
    for e in edges.to_pylist():
        if e["type"] != "sync_timing":
            without[(e["src"], e["dst"])] = without.get((e["src"], e["dst"]), 0.0) + e["w"]
    assert max(w for (a, _), w in without.items() if a.startswith("orch")) < EDGE_MIN_WEIGHT

    det = OnlineDetector(accounts=accounts)
    for r in rows:
        det.process(event_from_record({"request_id": r["request_id"], "timestamp": r["ts"], "account_id": r["account_id"],
                                       "client_ip": r["client_ip"], "user_agent": r["user_agent"],
                                       "endpoint": "/v1/chat/completions",
                                       "request": {"messages": [{"role": "user", "content": r["prompt"]}],
                                                   "temperature": 0.7, "max_tokens": 1024}}))
    roots = {det.linker.root(f"orch{i}") for i in range(8)}
    assert len(roots) == 1
    root = roots.pop()
    assert all(det.linker.root(a) != root for a in accounts if not a.startswith("orch"))


@pytest.mark.parametrize("scale", [1.0, 1000.0])  # 1000: timestamps in milliseconds, past numpy's 64-bit products
def test_signature_minima_are_those_of_every_bucket_seen_however_the_hashing_is_batched(scale):
    from distillguard.linkage.sync import _bucket_hashes

    rng = random.Random(7)
    buckets = sorted(rng.sample(range(5000), 150))
    order = buckets[:]
    for _ in range(10):  # a few late arrivals: an earlier bucket again, or one never seen
        order.insert(rng.randrange(30, len(order)), rng.choice([rng.choice(buckets), rng.randrange(5000)]))
    sig = ActivitySignature()
    seen: set[int] = set()
    for b in order:
        ts = (T0 + SYNC_BUCKET_S * b + 1) * scale
        keys = sig.add(ts)
        seen.add(int(ts // SYNC_BUCKET_S))
        if keys:  # emitted: the minima are read here, so they must be complete
            want = [min(col) for col in zip(*(_bucket_hashes(x) for x in seen))]
            assert list(sig.mins) == want
    sig._fold()
    assert list(sig.mins) == [min(col) for col in zip(*(_bucket_hashes(x) for x in seen))]
    assert 0 < sig.n <= len(seen)  # a late bucket that lowers no minimum is taken for one seen before
