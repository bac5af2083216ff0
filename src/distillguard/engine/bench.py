"""Benchmark: the account-stats stage on DuckDB vs Spark over the same logs (prints figures).

Run::

    python -m distillguard.engine.bench sim/traffic.jsonl.gz --master 'local[2]' --repeat 2

Ingests the logs once into a DuckDB work database (prompts cut to ``SCAN_CHARS``, as ``scan`` does),
then times :func:`~distillguard.features.stats.account_stats` (DuckDB) and
:func:`~distillguard.engine.spark.spark_account_stats` (the first Spark call includes starting the
JVM and session) and checks that both give equal stats.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="traffic-log files (jsonl, jsonl.gz, ...)")
    ap.add_argument("--master", default="local[2]", help="Spark master URL (default local[2])")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each engine (default 2)")
    args = ap.parse_args(argv)

    from distillguard.engine.spark import spark_account_stats
    from distillguard.features.derive import SCAN_CHARS
    from distillguard.features.stats import account_stats
    from distillguard.ingest import EventReader, EventStore, RejectWriter
    from distillguard.workdir import work_dir

    work = work_dir("distillguard-bench-")
    try:
        store = EventStore(":memory:", memory_limit="3GB", temp_directory=work)
        t = time.perf_counter()
        with RejectWriter(work / "rejected.jsonl") as rej:
            reader = EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False)
            store.append_all(reader, args.logs)
            store.finish_run(rej)
        n = store.count()
        print(f"ingest: {n} requests in {time.perf_counter() - t:.1f} s")
        duck_t, spark_t = [], []
        duck = sp = None
        for i in range(args.repeat):
            t = time.perf_counter()
            duck = account_stats(store.con).sort_by("account_id")
            duck_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            sp = spark_account_stats(store.con, master=args.master)
            spark_t.append(time.perf_counter() - t)
            print(f"run {i + 1}: duckdb {duck_t[-1]:.2f} s, spark({args.master}) {spark_t[-1]:.2f} s"
                  + (" (includes Spark start-up)" if i == 0 else ""), flush=True)
        equal = _equal(duck, sp)
        print(f"accounts: {duck.num_rows}; stats equal: {equal}")
        print(f"best: duckdb {min(duck_t):.2f} s ({n / min(duck_t):,.0f} req/s), "
              f"spark {min(spark_t):.2f} s ({n / min(spark_t):,.0f} req/s)")
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _equal(a, b) -> bool:
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if name in ("iat_sum", "iat_sum2"):
            if not np.allclose(x, y, rtol=1e-9, atol=1e-6):
                return False
        elif x != y:
            return False
    return True


if __name__ == "__main__":
    main()
