"""The online detector's own throughput: requests/s of ``OnlineDetector.process_derived`` alone.

``replay`` times reading the log, the derived-events query and the detector together; this isolates
the detector (what the gateway runs per request). The log is read and derived once, the first
``--requests`` requests (in time order) are turned into the per-request dicts ``replay`` passes, and
the loop over them is timed ``--repeat`` times with a fresh detector each time (best run reported).

Run (from the repository root)::

    .venv/bin/python benchmarks/online_detector.py speed300k.jsonl.gz --requests 100000
"""

from __future__ import annotations

import argparse
import gc
import time

from distillguard.detect.online import OnlineDetector
from distillguard.detect.replay import DERIVED_VALUES, _interned_words, _replay_sql
from distillguard.features.derive import DERIVED_FLAGS, SCAN_CHARS
from distillguard.ingest import EventReader, EventStore, RejectWriter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    store = EventStore(":memory:", memory_limit="3GB")
    with RejectWriter("/dev/null") as rej:
        store.append_all(EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False), [args.log])
        store.finish_run(rej)
    tab = store.con.sql(f"SELECT * FROM ({_replay_sql()}) LIMIT {int(args.requests)}").to_arrow_table()
    cols = {n: tab.column(n).to_pylist() for n in tab.schema.names if n != "words"}
    cols["words"] = _interned_words(tab.column("words"))  # as replay passes them (words_of interns too)
    rows = []
    for i in range(tab.num_rows):
        d = {c: cols[c][i] for c in DERIVED_FLAGS + DERIVED_VALUES}
        rows.append((cols["account_id"][i], cols["ts"][i], d, cols["words"][i], cols["client_ip"][i], cols["user_agent"][i], cols["model"][i]))
    gc.collect()
    gc.freeze()  # as the gateway does: what exists before the loop is not traversed by the collector
    store.close()  # nothing of the store is needed any more; keep its memory and threads out of the timing
    best = float("inf")
    for _ in range(args.repeat):
        det = OnlineDetector()
        t = time.perf_counter()
        for aid, ts, d, words, ip, ua, model in rows:
            det.process_derived(aid, ts, dict(d), words, client_ip=ip, user_agent=ua, model=model)
        best = min(best, time.perf_counter() - t)
    print(f"online detector: {len(rows):,} requests, best of {args.repeat}: {best:.2f} s = {len(rows) / best:,.0f} requests/s")


if __name__ == "__main__":
    main()
