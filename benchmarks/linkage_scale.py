"""Linkage at scale: time and peak memory of the account graph (edges + clusters), old against new.

The keys table (``_dg_keys``: account_id, type, value, log2_expected) of a real scan is dumped once,
then replicated ``--repeat`` times with relabelled accounts the way ``bench scan --repeat``
(:func:`distillguard.bench.speed.repeat_log`) copies a log: copy ``c`` renames every account to
``account_id#c`` and every payment fingerprint to ``value#c``; IPs, creation waves, user agents,
templates and request fingerprints stay as they were, so each is shared by ``repeat`` times as many
accounts. A request fingerprint's ``log2_expected`` grows by ``log2(repeat)`` (``repeat`` times the
accounts at the same frequencies), as it does in a scan of the repeated log.

Each (scale, implementation) runs in its own subprocess: ``edges_sql`` to Arrow (DuckDB with the
scan's 3 GB memory limit) and ``clusters_from_edges``; it reports seconds, peak RSS (``ru_maxrss``)
and the number of edge rows and clusters. "old" is ``linkage/graph.py`` at ``--old-ref`` (the
full pair self-join), "new" is the working tree. A run whose RSS passes ``--rss-cap-gb`` is stopped
and reported as such. At 1x the clusters of old and new are compared account by account.

Run (from the repository root; the first run scans the dev log to dump its keys, ~2 min)::

    .venv/bin/python benchmarks/linkage_scale.py \\
        --log /tmp/bfinal/traffic/standard-seed1001/traffic.jsonl.gz \\
        --accounts /tmp/bfinal/traffic/standard-seed1001/accounts.jsonl \\
        --work /tmp/linkage-bench --repeat 10

``--scales 1`` measures the dev scale only (seconds); ``--impls new`` skips the old self-join, which
at 10x passes the default 8 GB RSS cap. Subprocesses run with PYTHONHASHSEED=0: Louvain's node order
follows Python set order, so both implementations see the same one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_REF = "d2247b6"  # last commit with the full pair self-join


def dump_keys(log: Path, accounts: Path | None, out: Path) -> None:
    """Scan ``log`` and write the scan's ``_dg_keys`` table to ``out`` (parquet)."""
    import distillguard.detect.scan as scan

    orig = scan.compute_edges

    def hook(con, **kw):
        edges = orig(con, **kw)  # creates _dg_keys
        con.execute(f"COPY _dg_keys TO '{out}' (FORMAT parquet)")
        return edges

    scan.compute_edges = hook
    with tempfile.TemporaryDirectory() as d:
        scan.run_scan([log], d, accounts=accounts, progress=False, write_html=False)


def replicate(keys: Path, copies: int, out: Path) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"""COPY (
      SELECT account_id || '#' || c AS account_id, type,
             CASE WHEN type = 'payment_fingerprint' THEN value || '#' || c ELSE value END AS value,
             log2_expected + {math.log2(copies)} AS log2_expected
      FROM read_parquet('{keys}'), range({copies}) AS r(c)
    ) TO '{out}' (FORMAT parquet)""")


def _graph_module(impl: str, old_ref: str) -> types.ModuleType:
    if impl == "new":
        import distillguard.linkage.graph as g

        return g
    src = subprocess.run(["git", "show", f"{old_ref}:src/distillguard/linkage/graph.py"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType("graph_old")
    mod.__dict__["__name__"] = "graph_old"
    sys.modules["graph_old"] = mod  # dataclasses look the module up
    exec(compile(src, f"{old_ref}:graph.py", "exec"), mod.__dict__)
    return mod


def run_one(impl: str, keys: Path, clusters_out: Path, old_ref: str, memory_limit: str, dense_max: int | None) -> dict:
    """One measurement, in this process (called in a fresh subprocess by :func:`main`)."""
    import duckdb

    g = _graph_module(impl, old_ref)
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(config={"memory_limit": memory_limit, "temp_directory": tmp})
        con.execute(f"CREATE TEMP TABLE _dg_keys AS SELECT * FROM read_parquet('{keys}')")
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        sql = g.edges_sql("_dg_keys", dense_max=dense_max) if impl == "new" and dense_max else g.edges_sql("_dg_keys")
        edges = con.sql(sql).to_arrow_table()
        t1 = time.perf_counter()
        rss_edges = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        clusters = g.clusters_from_edges(edges)
        t2 = time.perf_counter()
    import pyarrow.compute as pc

    kept = edges.filter(pc.greater_equal(edges["total"], 1.0)).group_by(["src", "dst"]).aggregate([]).num_rows
    clusters_out.write_text(json.dumps(clusters, sort_keys=True))
    return {
        "impl": impl, "edges_s": round(t1 - t0, 2), "clusters_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
        "rss_before_mb": rss0 // 1024, "rss_after_edges_mb": rss_edges // 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "edge_rows": edges.num_rows, "graph_edges": kept,
        "clusters": len(set(clusters.values())), "clustered_accounts": len(clusters),
    }


def _measure(impl: str, keys: Path, clusters_out: Path, a: argparse.Namespace) -> dict:
    res = clusters_out.with_suffix(".result.json")
    res.unlink(missing_ok=True)
    p = subprocess.Popen([sys.executable, __file__, "--one", impl, "--keys", str(keys), "--clusters-out", str(clusters_out),
                          "--old-ref", a.old_ref, "--result", str(res), "--memory-limit", a.memory_limit,
                          "--dense-max", str(a.dense_max or 0)], cwd=ROOT)
    t0, peak, stopped = time.perf_counter(), 0, None
    while p.poll() is None:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) // 1024)
        except OSError:
            pass
        el = time.perf_counter() - t0
        if peak > a.rss_cap_gb * 1024 or el > a.timeout_s:
            stopped = f"stopped at {peak} MB RSS after {el:.0f} s"
            p.kill()
            p.wait()
            break
        time.sleep(0.2)
    if stopped or p.returncode != 0:
        return {"impl": impl, "stopped": stopped or f"exit {p.returncode}", "peak_rss_mb": peak,
                "total_s": round(time.perf_counter() - t0, 1)}
    return json.loads(res.read_text())


def differing_accounts(a: dict[str, str], b: dict[str, str]) -> int:
    """Accounts whose cluster (its set of members, or none) differs between two clusterings."""
    def members(c: dict[str, str]) -> dict[str, frozenset]:
        groups: dict[str, set] = {}
        for acc, cid in c.items():
            groups.setdefault(cid, set()).add(acc)
        return {acc: frozenset(groups[cid]) for acc, cid in c.items()}

    ma, mb = members(a), members(b)
    return sum(ma.get(x) != mb.get(x) for x in set(ma) | set(mb))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--log", type=Path, default=Path("/tmp/bfinal/traffic/standard-seed1001/traffic.jsonl.gz"))
    ap.add_argument("--accounts", type=Path, default=Path("/tmp/bfinal/traffic/standard-seed1001/accounts.jsonl"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/linkage-bench"))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--impls", default="old,new")
    ap.add_argument("--scales", default=None, help="comma-separated copies (default: 1,REPEAT)")
    ap.add_argument("--old-ref", default=OLD_REF)
    ap.add_argument("--rss-cap-gb", type=float, default=8.0, help="stop a run whose RSS passes this")
    ap.add_argument("--timeout-s", type=float, default=900)
    ap.add_argument("--memory-limit", default="3GB", help="DuckDB memory limit (the scan's is 3GB)")
    ap.add_argument("--dense-max", type=int, default=0, help="override DENSE_MAX for 'new' (0: the module's)")
    # internal: one measurement
    ap.add_argument("--one", default=None)
    ap.add_argument("--keys", type=Path)
    ap.add_argument("--clusters-out", type=Path)
    ap.add_argument("--result", type=Path)
    a = ap.parse_args()
    if a.one:
        a.result.write_text(json.dumps(run_one(a.one, a.keys, a.clusters_out, a.old_ref, a.memory_limit, a.dense_max or None)))
        return

    a.work.mkdir(parents=True, exist_ok=True)
    k1 = a.work / "keys-1x.parquet"
    if not k1.exists():
        print(f"dumping keys of {a.log} ...", flush=True)
        dump_keys(a.log, a.accounts, k1)
    scales = [int(x) for x in (a.scales or f"1,{a.repeat}").split(",")]
    rows = []
    for n in scales:
        keys = k1 if n == 1 else a.work / f"keys-{n}x.parquet"
        if not keys.exists():
            replicate(k1, n, keys)
        for impl in a.impls.split(","):
            r = _measure(impl, keys, a.work / f"clusters-{impl}-{n}x.json", a)
            r["scale"] = f"{n}x"
            rows.append(r)
            print(json.dumps(r), flush=True)
    print("\n| scale | impl | seconds (edges + clusters) | peak RSS | edge rows | graph edges | clusters |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "stopped" in r:
            print(f"| {r['scale']} | {r['impl']} | {r['total_s']} ({r['stopped']}) | >{r['peak_rss_mb']} MB | - | - | - |")
        else:
            print(f"| {r['scale']} | {r['impl']} | {r['total_s']} ({r['edges_s']} + {r['clusters_s']}) | {r['peak_rss_mb']} MB "
                  f"| {r['edge_rows']:,} | {r['graph_edges']:,} | {r['clusters']} |")
    for n in scales:
        fo, fn = a.work / f"clusters-old-{n}x.json", a.work / f"clusters-new-{n}x.json"
        if fo.exists() and fn.exists() and all("stopped" not in r for r in rows if r["scale"] == f"{n}x"):
            co, cn = json.loads(fo.read_text()), json.loads(fn.read_text())
            print(f"{n}x: accounts in a different cluster old vs new: {differing_accounts(co, cn)} "
                  f"(of {len(set(co) | set(cn))} clustered; identical ids: {co == cn})")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
