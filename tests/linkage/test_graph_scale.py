"""Linkage that grows with the number of sharers: exact pairs for small groups, sparse links for big ones."""

from __future__ import annotations

import math
import random

import duckdb
import pyarrow as pa
import pytest

from distillguard.linkage.graph import (
    DENSE_MAX,
    KEY_TYPES,
    SCRIPT_KEYS,
    SPARSE_CYCLES,
    KeyType,
    clusters_from_edges,
    edges_sql,
)


def full_edges_sql(keys: str) -> str:
    """The full pair self-join that ``edges_sql`` replaced (quadratic in sharers), kept as the reference."""
    def weight(k: KeyType) -> str:
        if k.name == "request_fingerprint":  # base per doubling of the lift over chance
            return f"greatest(0.0, {k.base} * (log2(m) - log2_expected))"
        return f"{k.base} / log2(1 + m)" if k.rarity else f"{k.base}"

    cases = " ".join(f"WHEN type = '{k.name}' AND m >= {k.min_share} AND m <= {k.cap} THEN {weight(k)}" for k in KEY_TYPES.values())
    caps = " ".join(f"WHEN type = '{k.name}' THEN {k.type_cap}" for k in KEY_TYPES.values())
    script = ", ".join(f"'{t}'" for t in sorted(SCRIPT_KEYS))
    return f"""
WITH kv AS (SELECT DISTINCT account_id, type, value, log2_expected FROM {keys} WHERE value IS NOT NULL),
sized AS (SELECT *, count(*) OVER (PARTITION BY type, value) AS m FROM kv),
w AS (SELECT *, CASE {cases} ELSE 0 END AS w FROM sized),
pairs AS (
  SELECT a.account_id AS src, b.account_id AS dst, a.type, sum(a.w) AS w, count(*) AS shared,
         arg_max(a.value, a.w) AS example
  FROM w a JOIN w b ON a.type = b.type AND a.value = b.value AND a.account_id < b.account_id
  WHERE a.w > 0
  GROUP BY ALL
),
typed AS (SELECT src, dst, type, least(w, CASE {caps} ELSE 1 END) AS w, shared, example FROM pairs)
SELECT src, dst, type, w, shared, example,
       sum(CASE WHEN type IN ({script}) THEN 0 ELSE w END) OVER p
       + max(CASE WHEN type IN ({script}) THEN w ELSE 0 END) OVER p AS total
FROM typed
WINDOW p AS (PARTITION BY src, dst)
"""


def _keys_con(rows: list[tuple[str, str, str | None, float | None]]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.register("t", pa.table({
        "account_id": pa.array([r[0] for r in rows], pa.string()),
        "type": pa.array([r[1] for r in rows], pa.string()),
        "value": pa.array([r[2] for r in rows], pa.string()),
        "log2_expected": pa.array([r[3] for r in rows], pa.float64()),
    }))
    con.execute("CREATE TABLE keys AS SELECT * FROM t")
    return con


def _rows(con, sql: str) -> dict[tuple[str, str, str], dict]:
    out = {}
    for r in con.sql(sql).to_arrow_table().to_pylist():
        key = (r["src"], r["dst"], r["type"])
        assert key not in out
        out[key] = r
    return out


def _assert_same(new: dict, old: dict, keys: list[tuple]) -> None:
    """Rows equal up to float summation order; ``example`` may be any of equally weighted shared values."""
    shared_vals: dict[tuple[str, str], set[str]] = {}
    for a, typ, v, _ in keys:
        shared_vals.setdefault((typ, v), set()).add(a)
    for key, n in new.items():
        o = old[key]
        assert n["w"] == pytest.approx(o["w"], abs=1e-9), key
        assert n["total"] == pytest.approx(o["total"], abs=1e-9), key
        assert n["shared"] == o["shared"], key
        if n["example"] != o["example"]:  # a tie between two shared values of one type
            assert n["shared"] > 1 and {n["src"], n["dst"]} <= shared_vals[(key[2], n["example"])], key


def _small_group_keys(seed: int) -> list[tuple]:
    """400 accounts with every key type, all groups at most DENSE_MAX sharers (some past a type's cap)."""
    rng = random.Random(seed)
    n = 400
    rows = []
    for i in range(n):
        a = f"acc{i:04d}"
        for _ in range(rng.randint(1, 3)):  # several IPs and prefixes per account
            rows.append((a, "client_ip", f"ip{rng.randrange(60)}", None))
            rows.append((a, "ip_prefix", f"pre{rng.randrange(12)}", None))
        rows.append((a, "payment_fingerprint", f"card{rng.randrange(150)}", None))
        rows.append((a, "user_agent_params", f"ua{rng.randrange(8)}", None))
        if rng.random() < 0.4:
            rows.append((a, "template", f"tpl{rng.randrange(4)}", None))
        rows.append((a, "created_wave", f"{rng.randrange(5) * 3600}", None))
        if rng.random() < 0.5:
            rows.append((a, "email_domain", f"corp{rng.randrange(6)}.example", None))
        if rng.random() < 0.7:
            fp = rng.randrange(10)
            rows.append((a, "request_fingerprint", f"fp{fp}", float(fp) / 2))
        if rng.random() < 0.05:
            rows.append((a, "client_ip", None, None))
    return rows


@pytest.mark.parametrize("seed", [0, 1])
def test_small_groups_give_exactly_the_full_self_join(seed):
    keys = _small_group_keys(seed)
    con = _keys_con(keys)
    sizes = con.execute("SELECT max(c) FROM (SELECT count(DISTINCT account_id) AS c FROM keys GROUP BY type, value)").fetchall()[0][0]
    assert 30 < sizes <= DENSE_MAX
    old = _rows(con, full_edges_sql("keys"))
    new = _rows(con, edges_sql("keys"))
    assert len(old) > 10_000 and set(new) == set(old)
    _assert_same(new, old, keys)


def _big_group(prefix: str, m: int, value: str, log2_expected: float) -> list[tuple]:
    return [(f"{prefix}{i:05d}", "request_fingerprint", value, log2_expected) for i in range(m)]


def test_a_big_group_gets_a_bounded_number_of_links_and_stays_connected():
    import networkx as nx

    m = 2000
    # a fingerprint at its type cap per pair, and a second operator's at 1.0 before the cap
    cap = KEY_TYPES["request_fingerprint"].type_cap
    keys = _big_group("a", m, "fpA", 2.0) + _big_group("b", m, "fpB", math.log2(m) - 4.0)
    con = _keys_con(keys)
    edges = con.sql(edges_sql("keys")).to_arrow_table()
    for prefix in "ab":
        pairs = {(s, d) for s, d in zip(edges["src"].to_pylist(), edges["dst"].to_pylist()) if s.startswith(prefix)}
        assert m * (SPARSE_CYCLES - 1) < len(pairs) <= m * SPARSE_CYCLES  # not m(m-1)/2 = 1,999,000
        degree: dict[str, int] = {}
        for s, d in pairs:
            degree[s] = degree.get(s, 0) + 1
            degree[d] = degree.get(d, 0) + 1
        assert len(degree) == m and max(degree.values()) <= 2 * SPARSE_CYCLES
    assert set(edges["type"].to_pylist()) == {"request_fingerprint"}
    assert min(edges["total"].to_pylist()) == pytest.approx(cap)
    # the sparse links keep each group connected (one more shared trait per pair then makes it one
    # cluster; a fingerprint alone links no one: see test_graph), and never join the two groups
    g = nx.Graph(zip(edges["src"].to_pylist(), edges["dst"].to_pylist()))
    comps = list(nx.connected_components(g))
    assert len(comps) == 2 and {len(c) for c in comps} == {m}
    assert all(len({a[0] for a in c}) == 1 for c in comps)


def test_a_pair_sharing_a_big_group_key_and_a_small_one_gets_both_weights():
    m = 300
    log2_expected = math.log2(m) - 2.0  # fingerprint weight 0.5 per pair
    keys = _big_group("a", m, "fp", log2_expected)
    # pairs of the big group that also share a card, and a few that also share a client IP
    keys += [(f"a{i:05d}", "payment_fingerprint", f"card{i // 2}", None) for i in range(0, 40)]
    keys += [(f"a{i:05d}", "client_ip", "10.0.0.1", None) for i in (100, 200, 250)]
    con = _keys_con(keys)
    new = _rows(con, edges_sql("keys"))
    old = _rows(con, full_edges_sql("keys"))
    assert len(old) > 40_000 > 3 * len(new)
    _assert_same(new, old, keys)  # every pair linked is linked with its exact weights
    for i in range(0, 40, 2):
        src, dst = f"a{i:05d}", f"a{i + 1:05d}"
        assert new[(src, dst, "request_fingerprint")]["w"] == pytest.approx(0.5)
        assert new[(src, dst, "payment_fingerprint")]["total"] == pytest.approx(1.5)
    ip = new[("a00100", "a00200", "client_ip")]
    assert ip["total"] == pytest.approx(0.5 + 0.7 / 2)
    assert new[("a00100", "a00200", "request_fingerprint")]["total"] == ip["total"]


def test_the_example_of_tied_shared_values_is_always_the_first_value():
    """Pairs sharing several equally weighted values show the first of them, whatever order DuckDB joins in."""
    rng = random.Random(7)
    rows = []
    for g in range(300):  # pairs of accounts sharing 2-6 client IPs that nobody else has (all weight-equal)
        ips = [f"ip{g:03d}-{rng.randrange(10**6):06d}" for _ in range(rng.randint(2, 6))]
        for a in (f"p{g:03d}a", f"p{g:03d}b"):
            rows += [(a, "client_ip", ip, None) for ip in rng.sample(ips, len(ips))]
    expected = {}
    for a, _, ip, _ in rows:
        if a.endswith("a"):
            expected.setdefault((a, a[:-1] + "b"), set()).add(ip)
    for threads in (1, 2):
        con = _keys_con(rng.sample(rows, len(rows)))
        con.execute(f"SET threads = {threads}")
        got = _rows(con, edges_sql("keys"))
        assert len(got) == len(expected)
        for (src, dst, typ), r in got.items():
            assert typ == "client_ip" and r["shared"] == len(expected[(src, dst)])
            assert r["example"] == min(expected[(src, dst)]), (src, dst)
