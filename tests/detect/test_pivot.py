"""Model releases and model-pivot flags: the SQL and the online tracker agree request by request."""

from __future__ import annotations

import math

import duckdb
import pyarrow as pa

from distillguard.features.pivot import PIVOT_WINDOW_H, ReleaseTracker, pivot_flags_sql, pivot_windows_sql, releases_sql
from distillguard.features.stats import AccountStats, account_stats, features_of
from distillguard.schema import EVENT_SCHEMA, event_from_record

from .pivot_records import BASE, RELEASE_HOUR, pivot_records


def _con():
    events = [event_from_record(r) for r in pivot_records()]
    con = duckdb.connect()
    con.register("events", pa.Table.from_pylist(events, schema=EVENT_SCHEMA))
    return con, events


def test_release_found_once_and_early_access_ignored():
    con, _ = _con()
    rel = dict(con.sql(releases_sql("events")).fetchall())
    # m-new had 3 early requests in hour 1 (not a release), m-rare was busy in the first day (established)
    assert rel == {"m-new": int(BASE // 3600) + RELEASE_HOUR}


def test_sql_flags_equal_online_tracker():
    con, events = _con()
    rows = con.sql(f"WITH w AS ({pivot_windows_sql('events')}) "
                   + pivot_flags_sql("events", "w") + " ORDER BY ts, request_id").fetchall()
    cols = [d[0] for d in con.sql(f"WITH w AS ({pivot_windows_sql('events')}) " + pivot_flags_sql("events", "w") + " LIMIT 0").description]
    rid, post_i, newm_i = cols.index("request_id"), cols.index("post"), cols.index("newm")
    by_id = {r[rid]: (r[post_i], r[newm_i]) for r in rows}
    tracker = ReleaseTracker()
    n_post = n_newm = 0
    for ev in sorted(events, key=lambda e: (e["ts"], e["request_id"])):
        flags = tracker.observe(ev["ts"], ev["model"])
        assert flags == by_id[ev["request_id"]], ev
        n_post += flags[0]
        n_newm += flags[1]
    # not vacuous: a window of PIVOT_WINDOW_H hours of traffic, some of it to the new model
    assert n_post > PIVOT_WINDOW_H * 20 and 0 < n_newm < n_post
    assert tracker.releases == {"m-new": int(BASE // 3600) + RELEASE_HOUR}


def test_pivot_share_separates_the_pivoting_accounts():
    con, events = _con()
    con.execute("CREATE TABLE ev AS SELECT * FROM events")
    stats = {r["account_id"]: features_of(AccountStats.from_row(r)) for r in account_stats(con, "ev").to_pylist()}
    pivots = [f["pivot_share"] for a, f in stats.items() if a.startswith("pivot-")]
    users = [f["pivot_share"] for a, f in stats.items() if a.startswith("user-")]
    assert min(pivots) > 0.35 and max(users) < 0.2, (pivots, users)


def test_no_release_means_no_pivot_share():
    rec = [event_from_record({"request_id": f"r{i}", "timestamp": BASE + i * 60, "account_id": "a",
                              "endpoint": "/v1/chat/completions",
                              "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]}}) for i in range(3000)]
    con = duckdb.connect()
    con.register("events", pa.Table.from_pylist(rec, schema=EVENT_SCHEMA))
    row = account_stats(con, "events").to_pylist()[0]
    assert row["post"] == row["newm"] == 0
    assert math.isnan(features_of(AccountStats.from_row(row))["pivot_share"])


def test_online_detector_counts_the_same_pivot_flags_as_batch():
    from distillguard.detect.online import OnlineDetector

    con, events = _con()
    con.execute("CREATE TABLE ev AS SELECT * FROM events")
    batch = {r["account_id"]: (r["post"], r["newm"]) for r in account_stats(con, "ev").to_pylist()}
    det = OnlineDetector()
    for ev in sorted(events, key=lambda e: (e["ts"], e["request_id"])):
        det.process(ev)
    online = {a: (st.stats.post, st.stats.newm) for a, st in det._acc.items()}
    assert online == batch and sum(p for p, _ in batch.values()) > 0
