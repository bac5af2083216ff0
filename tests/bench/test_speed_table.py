"""The speed benchmark: its steps run as child processes, and its table shows each one's wall and CPU
time and its ratio to the parse."""

from __future__ import annotations

from distillguard.bench.speed import to_markdown


def test_the_table_has_cpu_seconds_and_the_ratio_to_the_parse():
    results = {"log": "x.jsonl.gz", "log_bytes": 2**20, "cores": 2, "steps": [
        {"step": "duckdb_parse", "rows": 1000, "wall_s": 2.0, "cpu_s": 3.5, "peak_rss_mib": 100.0, "requests_per_s": 500.0},
        {"step": "scan", "rows": 1000, "wall_s": 8.0, "cpu_s": 14.25, "peak_rss_mib": 900.0, "requests_per_s": 125.0,
         "ratio_to_duckdb_parse": 4.0, "ingest_s": 3.0},
    ]}
    md = to_markdown(results)
    header, rule, parse, scan = [line for line in md.splitlines() if line.startswith("|")]
    assert header.split("|")[3].strip() == "wall s" and header.split("|")[4].strip() == "CPU s"
    assert len(header.split("|")) == len(rule.split("|")) == len(scan.split("|"))
    assert [c.strip() for c in scan.split("|")[1:-1]] == ["scan", "1,000", "8.0", "14.2", "125", "900", "4.00"]
    assert parse.split("|")[-2].strip() == "1.00 (baseline)"
    assert "scan by stage: ingest 3.0 s (1.50x parse)" in md


def test_the_speed_steps_run_and_leave_no_folder_behind(tiny_eval, tmp_path):
    """Each measured step is a real child process; what it writes goes to its own, removed $TMPDIR."""
    import os
    import tempfile

    from distillguard.bench.speed import run_speed_bench

    before = set(os.listdir(tempfile.gettempdir()))
    res = run_speed_bench(tiny_eval / "traffic.jsonl.gz", steps=["ingest", "scan", "replay_reader"], out=tmp_path / "out")
    rows = {s["step"]: s["rows"] for s in res["steps"]}
    assert rows["duckdb_parse"] == rows["ingest"] == rows["scan"] == rows["replay_reader"] > 0
    assert "replay_reader: the streamed replay's reader alone" in to_markdown(res)
    assert all(s["cpu_s"] > 0 and s["peak_rss_mib"] > 0 for s in res["steps"])
    assert (tmp_path / "out" / "speed.md").read_text() == to_markdown(res)
    assert set(os.listdir(tempfile.gettempdir())) == before
