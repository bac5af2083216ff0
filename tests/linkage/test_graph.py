"""Account-graph keys, edge weights and clusters."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa

from distillguard.linkage.graph import EDGE_MIN_WEIGHT, KEY_TYPES, clusters_from_edges, compute_edges


def _con(rows: list[dict]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    cols = ["request_id", "ts", "account_id", "client_ip", "user_agent", "system_prompt", "temperature", "top_p",
            "max_tokens", "n", "stream", "logprobs", "prompt"]  # fmt: skip
    t = pa.table({c: [r.get(c) for r in rows] for c in cols})
    con.register("t", t)
    con.execute("CREATE TABLE events AS SELECT * FROM t")
    con.execute("CREATE TABLE ta (account_id VARCHAR, pre UBIGINT)")
    return con


def _population(seed: int = 1) -> list[dict]:
    """300 customers with one setting each (and random streaming), 12 accounts of one operator whose
    script rotates four (temperature, max_tokens) settings under one system prompt, through the same
    eight proxy addresses."""
    rng = random.Random(seed)
    rows = []
    settings = [(t, m) for t in (None, 0.0, 0.2, 0.7, 1.0) for m in (None, 512, 1024, 2048, 4096)]
    for i in range(300):
        temp, maxt = settings[i % len(settings)]
        sp = None if i % 3 else "You are a helpful assistant."
        for j in range(25):
            rows.append({"request_id": f"b{i}-{j}", "ts": float(j), "account_id": f"cust{i:03d}", "client_ip": f"10.{i}.{j % 3}.1",
                         "system_prompt": sp, "temperature": temp, "max_tokens": maxt, "n": 1,
                         "stream": rng.random() < 0.5, "logprobs": False, "prompt": f"question {i} {j}"})
    for i in range(12):
        for j in range(40):
            temp, maxt = [(0.7, 1024), (0.7, 2048), (None, 1024), (None, 2048)][j % 4]
            rows.append({"request_id": f"x{i}-{j}", "ts": float(j), "account_id": f"op{i:02d}", "client_ip": f"172.16.0.{j % 8}",
                         "system_prompt": "You are a world-class expert. Answer accurately.", "temperature": temp,
                         "max_tokens": maxt, "n": 1, "stream": rng.random() < 0.3, "logprobs": False, "prompt": f"item {i} {j}"})
    return rows


def test_request_fingerprint_links_one_operators_accounts_and_not_customers_with_common_settings():
    con = _con(_population())
    edges = compute_edges(con, events="events", accounts=None, template_accounts="ta").to_pylist()
    fp = [e for e in edges if e["type"] == "request_fingerprint"]
    # the operator's fingerprint is far above chance (full weight), and with the shared proxies an edge
    op_pairs = {(e["src"], e["dst"]) for e in fp if e["w"] >= KEY_TYPES["request_fingerprint"].type_cap - 1e-9}
    assert len(op_pairs) == 12 * 11 // 2
    assert all(e["total"] >= EDGE_MIN_WEIGHT for e in fp if (e["src"], e["dst"]) in op_pairs)
    assert all(s.startswith("op") and d.startswith("op") for s, d in op_pairs)
    # customers sharing one common setting (12 each, streaming or not) get nothing near an edge
    cust = [e["w"] for e in fp if e["src"].startswith("cust")]
    assert max(cust, default=0.0) < 0.5
    clusters = clusters_from_edges(pa.Table.from_pylist(edges))
    assert len({clusters.get(f"op{i:02d}") for i in range(12)}) == 1 and clusters.get("op00") is not None
    assert not any(a.startswith("cust") for a in clusters)


def _tool_users(n: int = 15) -> list[dict]:
    """``n`` unrelated teams running one public evaluation tool: its bundled system prompt and its
    multiple-choice settings (temperature 0, one output token, logprobs), from their own addresses."""
    return [{"request_id": f"e{i}-{j}", "ts": float(1000 * i + j), "account_id": f"eval{i:02d}", "client_ip": f"192.0.{i}.{j % 4}",
             "system_prompt": "You are a helpful, respectful and honest assistant.", "temperature": 0.0, "max_tokens": 1,
             "n": 1, "stream": False, "logprobs": True, "prompt": f"benchmark question {j}"} for i in range(n) for j in range(40)]


def test_a_shared_request_fingerprint_alone_links_no_one():
    """Independent users of one tool's defaults share a fingerprint far above chance, as one operator's
    accounts do; without any other shared trait they stay unlinked (the operator's accounts, which also
    share proxy addresses, are still one cluster)."""
    con = _con(_population() + _tool_users())
    edges = compute_edges(con, events="events", accounts=None, template_accounts="ta").to_pylist()
    fp = [e for e in edges if e["type"] == "request_fingerprint" and e["src"].startswith("eval")]
    assert len(fp) == 15 * 14 // 2 and min(e["w"] for e in fp) > 0.5  # a rare fingerprint, shared by all of them
    assert all(e["total"] < EDGE_MIN_WEIGHT for e in edges if e["src"].startswith("eval"))
    clusters = clusters_from_edges(pa.Table.from_pylist(edges))
    assert not any(a.startswith("eval") for a in clusters)
    assert len({clusters.get(f"op{i:02d}") for i in range(12)}) == 1 and clusters.get("op00") is not None


def test_fingerprint_needs_enough_requests():
    rows = [r for r in _population() if not (r["account_id"].startswith("op") and int(r["request_id"].split("-")[1]) >= 10)]
    con = _con(rows)
    edges = compute_edges(con, events="events", accounts=None, template_accounts="ta").to_pylist()
    assert not [e for e in edges if e["type"] == "request_fingerprint" and e["src"].startswith("op")]


def _clique(prefix: str, n: int, w: float) -> list[dict]:
    return [{"src": f"{prefix}{i}", "dst": f"{prefix}{j}", "total": w} for i in range(n) for j in range(i + 1, n)]


def test_groups_joined_by_many_cross_edges_stay_one_cluster_and_separate_components_stay_apart():
    edges = _clique("a", 30, 2.0) + _clique("b", 30, 2.0)
    # one operator, two payment cards: every account of group a shares a weaker link (same request
    # fingerprint, created in the same hour) with ten of group b
    edges += [{"src": f"a{i}", "dst": f"b{(i + k) % 30}", "total": 1.05} for i in range(30) for k in range(10)]
    edges += _clique("z", 4, 1.5)  # an unrelated small group
    clusters = clusters_from_edges(pa.Table.from_pylist(edges))
    assert len({clusters[f"a{i}"] for i in range(30)} | {clusters[f"b{i}"] for i in range(30)}) == 1
    assert clusters["z0"] == clusters["z3"] != clusters["a0"]


def test_a_campaigns_payment_card_cliques_joined_by_weaker_links_are_one_cluster():
    # a hydra campaign: three cards of 50 accounts each (card + more: 1.7 a pair), and between the
    # cards 30 pairs each sharing a residential proxy IP or a creation wave plus settings (1.2)
    rng = random.Random(0)
    edges = _clique("a", 50, 1.7) + _clique("b", 50, 1.7) + _clique("c", 50, 1.7)
    for x, y in (("a", "b"), ("b", "c"), ("a", "c")):
        edges += [{"src": f"{x}{rng.randrange(50)}", "dst": f"{y}{rng.randrange(50)}", "total": 1.2} for _ in range(30)]
    clusters = clusters_from_edges(pa.Table.from_pylist(edges))
    assert len({clusters[f"{g}{i}"] for g in "abc" for i in range(50)}) == 1


def test_two_groups_with_a_single_bridge_stay_two_clusters():
    edges = _clique("a", 10, 2.0) + _clique("b", 10, 2.0) + [{"src": "a0", "dst": "b0", "total": 1.0}]
    clusters = clusters_from_edges(pa.Table.from_pylist(edges))
    assert clusters["a1"] == clusters["a9"] != clusters["b1"] == clusters["b9"]


def test_edges_below_the_minimum_weight_link_nothing():
    clusters = clusters_from_edges(pa.Table.from_pylist([{"src": "a", "dst": "b", "total": EDGE_MIN_WEIGHT - 0.01}]))
    assert clusters == {}
