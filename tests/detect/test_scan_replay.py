"""scan, replay and train end to end on small simulated traffic, through the API and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from distillguard.detect.replay import run_replay
from distillguard.detect.scan import run_scan
from distillguard.detect.signals import NEEDS_DAYS, SIGNALS_BY_NAME
from distillguard.errors import InputError


def _jsonl(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def scanned(small_traffic, tmp_path_factory):
    out = tmp_path_factory.mktemp("scan")
    summary = run_scan([small_traffic / "traffic.jsonl.gz"], out, accounts=small_traffic / "accounts.jsonl", progress=False)
    return out, summary


def test_scan_writes_contract_files(scanned, small_traffic):
    out, summary = scanned
    for name in ("verdicts.jsonl", "clusters.jsonl", "report.html", "rejected.jsonl", "summary.json",
                 "accounts.parquet", "signals.json", "evidence.jsonl"):
        assert (out / name).exists(), name
    verdicts = _jsonl(out / "verdicts.jsonl")
    labels = {r["account_id"] for r in _jsonl(small_traffic / "labels.jsonl")}
    seen = {v["account_id"] for v in verdicts}
    assert seen <= labels and len(seen) == summary["accounts"]
    assert [v["account_id"] for v in verdicts] == sorted(seen)  # in account order: runs diff clean
    for v in verdicts:
        assert set(v) == {"account_id", "score", "flagged", "cluster_id", "reasons"}
        assert 0.0 <= v["score"] <= 1.0
        assert v["flagged"] == (v["score"] >= summary["threshold"])
        for r in v["reasons"]:
            assert set(r) == {"signal", "value", "detail"}
    for c in _jsonl(out / "clusters.jsonl"):
        assert len(c["account_ids"]) >= 2 and isinstance(c["flagged"], bool)
        # its combined traffic's score, at most its members' unless they reach the threshold
        gated = c["combined_score"] if c["members_score"] >= summary["threshold"] else min(c["combined_score"], c["members_score"])
        assert abs(c["score"] - gated) <= 1e-6
        assert all({"type", "value", "accounts", "edges"} <= set(link) for link in c["links"])


def test_scan_separates_extraction_from_benign(scanned, small_traffic):
    out, _ = scanned
    lab = {r["account_id"]: r["label"] for r in _jsonl(small_traffic / "labels.jsonl")}
    v = _jsonl(out / "verdicts.jsonl")
    ext = [x["score"] for x in v if lab[x["account_id"]] == "extraction"]
    ben = [x["score"] for x in v if lab[x["account_id"]] == "benign"]
    assert ext and ben
    # rank quality: an extraction account outscores a benign one most of the time
    wins = sum(e > b for e in ext for b in ben) / (len(ext) * len(ben))
    assert wins > 0.85
    assert sum(x["flagged"] for x in v if lab[x["account_id"]] == "benign") <= max(1, len(ben) // 50)


def test_flagged_accounts_have_reasons_and_evidence(scanned):
    out, _ = scanned
    flagged = [v for v in _jsonl(out / "verdicts.jsonl") if v["flagged"]]
    ev = {e["account_id"]: e for e in _jsonl(out / "evidence.jsonl")}
    assert flagged
    for v in flagged:
        assert v["reasons"], v["account_id"]
        assert v["account_id"] in ev and ev[v["account_id"]]["timeline"]["counts"]


def test_two_scans_of_one_log_write_the_same_files(scanned, small_traffic, tmp_path):
    """Verdicts, clusters and evidence (its sampled links, indicators and examples too) diff clean."""
    out, _ = scanned
    run_scan([small_traffic / "traffic.jsonl.gz"], tmp_path, accounts=small_traffic / "accounts.jsonl", progress=False,
             write_html=False)
    for name in ("verdicts.jsonl", "clusters.jsonl", "evidence.jsonl"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    for e in _jsonl(out / "evidence.jsonl"):  # the strongest links first
        weights = [link["weight"] for link in e["links"]]
        assert weights == sorted(weights, reverse=True)


def test_a_scan_through_the_events_table_writes_the_same_files(scanned, small_traffic, tmp_path, monkeypatch):
    """A log past the in-memory budget goes through a DuckDB table, this small one through Arrow
    batches (EventStore's ``keep_in_memory``): the outputs must not tell which."""
    import distillguard.detect.scan as scan_mod

    out, _ = scanned
    monkeypatch.setattr(scan_mod, "KEEP_IN_MEMORY", 0.0)
    summary = run_scan([small_traffic / "traffic.jsonl.gz"], tmp_path, accounts=small_traffic / "accounts.jsonl",
                       progress=False, write_html=False)
    assert summary["requests"] > 1000
    for name in ("verdicts.jsonl", "clusters.jsonl", "evidence.jsonl", "rejected.jsonl"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_scan_memory_limit_option(scanned, small_traffic, tmp_path):
    """``--memory-limit`` sets DuckDB's limit (and so the in-memory budget); a value that is no size is
    one clear line and exit 2, before anything is read."""
    log = str(small_traffic / "traffic.jsonl.gz")
    p = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", log, "--out", str(tmp_path / "bad"),
                        "--memory-limit", "lots"], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "memory limit 'lots' is not a size" in p.stderr
    p = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", log, "--out", str(tmp_path / "ok"), "--quiet",
                        "--accounts", str(small_traffic / "accounts.jsonl"), "--memory-limit", "512MB"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "ok" / "verdicts.jsonl").read_bytes() == (scanned[0] / "verdicts.jsonl").read_bytes()


def test_redact_hashes_example_prompts(small_traffic, tmp_path):
    run_scan([small_traffic / "traffic.jsonl.gz"], tmp_path, accounts=small_traffic / "accounts.jsonl", redact=True,
             progress=False, write_html=False)
    for e in _jsonl(tmp_path / "evidence.jsonl"):
        assert all(p.startswith("sha256:") for p in e["example_prompts"])
    # link values carry no prompt text either: the request fingerprint's system prompt is hashed
    import pyarrow.parquet as pq

    edges = pq.read_table(tmp_path / "graph_edges.parquet").to_pylist()
    fps = [e["example"] for e in edges if e["type"] == "request_fingerprint"]
    assert any(v.startswith("sha256:") for v in fps)  # system prompts present in this traffic, and hashed
    assert all(v.startswith(("sha256:", "(no system prompt)")) for v in fps)
    texts = [v for c in _jsonl(tmp_path / "clusters.jsonl") for link in c["links"] if link["type"] == "request_fingerprint"
             for v in [link["value"]]]
    texts += [f["value"] for c in _jsonl(tmp_path / "clusters.jsonl") for f in c["fingerprints"]]
    assert all(v.startswith(("sha256:", "(no system prompt)")) for v in texts)
    # and so do the evidence's indicators (each account's own fingerprint)
    ind = [v for e in _jsonl(tmp_path / "evidence.jsonl") for v in e["indicators"].get("request_fingerprints", [])]
    assert ind and all(v.startswith(("sha256:", "(no system prompt)")) for v in ind)


def test_redacted_report_hashes_rejected_lines(tmp_path):
    """A rejected line is input text: the redacted report shows its hash, rejected.jsonl keeps it whole."""
    secret = "my-private-prompt-about-project-nightingale"
    good = [orjson.dumps({"request_id": f"r{i}", "timestamp": 1772409600 + i, "account_id": f"a{i % 3}",
                          "endpoint": "/v1/chat/completions", "request": {"messages": [{"role": "user", "content": f"q {i}"}]}})
            for i in range(30)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"\n".join(good + [b'{"request_id": "bad", "prompt": "' + secret.encode() + b'"']) + b"\n")
    for redact in (False, True):
        out = tmp_path / f"out-{redact}"
        summary = run_scan([log], out, progress=False, redact=redact)
        assert summary["redacted"] is redact and summary["rejected"] == 1
        html = (out / "report.html").read_text()
        assert "log.jsonl:31</td><td>line is not valid JSON" in html  # the example row is there either way
        assert (secret in html) is not redact and ('<td class="mono">sha256:' in html) is redact
        assert secret in (out / "rejected.jsonl").read_text()  # nothing is lost


def test_redact_link_value_keeps_settings_and_identity():
    from distillguard.detect.scan import _redact_link_value

    v = "you are a world-class expert. answer acc | 0.2|-|1024|1|0 | #87337bb4"
    r = _redact_link_value(v)
    assert r.startswith("sha256:") and r.endswith(" | 0.2|-|1024|1|0 | #87337bb4") and "expert" not in r
    assert _redact_link_value(v) == r != _redact_link_value("other" + v)
    assert _redact_link_value("(no system prompt) | 0.7|-|-|1|0 | #1") == "(no system prompt) | 0.7|-|-|1|0 | #1"


def test_replay_first_flags(small_traffic, tmp_path, scanned):
    s = run_replay([small_traffic / "traffic.jsonl.gz"], tmp_path, accounts=small_traffic / "accounts.jsonl", progress=False)
    flags = _jsonl(tmp_path / "first_flags.jsonl")
    assert s["flagged_accounts"] == len(flags) > 0
    for f in flags:
        assert {"account_id", "flagged_at", "requests_before_flag", "cluster_id", "reasons"} <= set(f)
        assert f["requests_before_flag"] >= 0 and f["flagged_at"].endswith("Z")
    # online and batch agree on who is an extractor for most accounts
    scan_flagged = {v["account_id"] for v in _jsonl(scanned[0] / "verdicts.jsonl") if v["flagged"]}
    online = {f["account_id"] for f in flags}
    assert len(scan_flagged & online) >= 0.7 * len(scan_flagged)


def test_scan_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    with pytest.raises(InputError, match="no readable requests"):
        run_scan([bad], tmp_path / "out", progress=False)
    assert len(_jsonl(tmp_path / "out" / "rejected.jsonl")) == 2
    p = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", str(bad), "--out", str(tmp_path / "o2")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "no readable requests" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    ro = tmp_path / "ro"
    ro.write_text("a file, not a folder")
    p = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", str(bad), "--out", str(ro / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "cannot write" in p.stderr


def _train(traffic: Path, model: Path, *options: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``distillguard train`` as a user runs it: the model file it wrote, and the process."""
    p = subprocess.run([sys.executable, "-m", "distillguard.cli", "train", str(traffic), "--out", str(model), *options],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return orjson.loads(model.read_bytes()), p


def test_train_then_scan_with_model(small_traffic, tmp_path):
    model = tmp_path / "m.json"
    m, p = _train(small_traffic, model, "--exclude", "model_pivot")
    assert all(w >= 0 for w in m["weights"].values()) and 0 <= m["threshold"] <= 1
    assert m["weights"]["model_pivot"] == 0.0 and m["meta"]["excluded_signals"] == ["model_pivot"]
    assert 0 <= m["online_threshold"] <= 1 and "online threshold" in p.stdout
    # young clusters get their own weights, without the signals that need days, and a bias no more
    # lenient than their own fit's 0.5
    assert m["meta"]["young_cluster_rows"] > 0 and "young clusters" in p.stdout
    assert all(m["early"]["weights"][name] == 0.0 for name in NEEDS_DAYS | {"model_pivot"})
    assert m["early"]["weights"]["account_farm"] > 0 and 0.5 <= m["meta"]["early_raw_threshold"] < 1
    # single accounts in their first day get first-day weights the same way, their bias set on the room
    # the young clusters leave
    assert m["meta"]["young_account_rows"] > 0 and "young accounts" in p.stdout
    assert all(m["early_account"]["weights"][name] == 0.0 for name in NEEDS_DAYS | {"model_pivot"})
    assert 0.5 <= m["meta"]["early_account_raw_threshold"] < 1
    # learned shapes, listed in the meta, each monotone in its signal's catalogue direction
    assert m["shapes"] and m["meta"]["shaped_signals"] == sorted(m["shapes"]) and "model_pivot" not in m["shapes"]
    for name, sh in m["shapes"].items():
        rises = SIGNALS_BY_NAME[name].hi > SIGNALS_BY_NAME[name].lo
        steps = [b - a for a, b in zip(sh["y"], sh["y"][1:])]
        assert all(d >= -1e-12 for d in steps) if rises else all(d <= 1e-12 for d in steps), name
    s = run_scan([small_traffic / "traffic.jsonl.gz"], tmp_path / "s", accounts=small_traffic / "accounts.jsonl",
                 model=model, progress=False, write_html=False)
    assert s["threshold"] == pytest.approx(m["threshold"])
    # replaying the training traffic with the model flags benign accounts at no more than the target
    # rate: the online threshold was chosen on exactly these peaks
    r = run_replay([small_traffic / "traffic.jsonl.gz"], tmp_path / "r", accounts=small_traffic / "accounts.jsonl",
                   model=model, progress=False)
    assert r["threshold"] == pytest.approx(m["online_threshold"])
    labels = {x["account_id"]: x["label"] for x in _jsonl(small_traffic / "labels.jsonl")}
    flagged = [x["account_id"] for x in _jsonl(tmp_path / "r" / "first_flags.jsonl")]
    n_benign = sum(v == "benign" for v in labels.values())
    assert flagged and sum(labels[a] == "benign" for a in flagged) <= int(m["target_fpr"] * n_benign)


def test_gateway_refusals_without_a_key_are_counted_but_not_scored(tmp_path):
    def rec(i, account):
        return orjson.dumps({"request_id": f"r{i}", "timestamp": 1772409600 + i, "account_id": account, "status_code": 401 if account == "unauthenticated" else 200,
                             "endpoint": "/v1/chat/completions", "request": {"messages": [{"role": "user", "content": f"q {i}"}]},
                             "distillguard": {"auth": "missing"} if account == "unauthenticated" else {}})
    log = tmp_path / "gw.jsonl"
    log.write_bytes(b"\n".join(rec(i, "unauthenticated" if i % 3 == 0 else f"acct{i % 2}") for i in range(60)) + b"\n")
    summary = run_scan([log], tmp_path / "out", progress=False, write_html=False)
    assert summary["unauthenticated_requests"] == 20 and summary["requests"] == 40
    assert {v["account_id"] for v in _jsonl(tmp_path / "out" / "verdicts.jsonl")} == {"acct0", "acct1"}
    rs = run_replay([log], tmp_path / "replay", progress=False)
    assert rs["requests"] == 60 and rs["accounts"] == 2  # all read; the detector saw only the two accounts


def test_shrink_duckdb_halves_the_memory_limit():
    import duckdb

    from distillguard.detect.scan import _shrink_duckdb

    con = duckdb.connect(config={"memory_limit": "2GiB"})
    _shrink_duckdb(con, 0.5)
    assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0] == "1.0 GiB"


def test_scan_out_of_memory_is_one_clear_error_and_leaves_no_spill_folder(small_traffic, tmp_path, monkeypatch):
    """A DuckDB memory limit too small for a step that cannot spill is the machine's limit, not a bug: the
    scan says so in one line (the CLI prints it and exits 2) and removes its spill folder."""
    import tempfile

    import pytest

    from distillguard.detect.scan import run_scan
    from distillguard.errors import InputError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where run_scan makes its spill folder
    with pytest.raises(InputError, match=r"^out of memory: DuckDB could not fit .* under its limit of 1MB"):
        run_scan([small_traffic / "traffic.jsonl.gz"], tmp_path / "out", progress=False, write_html=False, memory_limit="1MB")
    assert not list(tmp_path.glob("distillguard-scan-*"))
    assert (tmp_path / "out" / "rejected.jsonl").exists()


def test_train_without_shapes_keeps_the_catalogue_ramps(small_traffic, tmp_path):
    m, _ = _train(small_traffic, tmp_path / "m.json", "--no-online", "--no-shapes")
    assert "shapes" not in m and "shaped_signals" not in m["meta"] and any(w > 0 for w in m["weights"].values())


def test_a_log_cut_short_is_scanned_up_to_the_cut_and_reported(small_traffic, tmp_path):
    """A day's log cut short by a crash mid-write: scan and replay keep every line before the cut and
    the other logs, report the damage (rejected.jsonl, the summary, a warning), and exit 0."""
    import gzip

    lines = gzip.decompress((small_traffic / "traffic.jsonl.gz").read_bytes()).splitlines(keepends=True)
    half = len(lines) // 2
    (tmp_path / "day2.jsonl").write_bytes(b"".join(lines[half:]))
    blob = gzip.compress(b"".join(lines[:half]))
    cut = tmp_path / "day1.jsonl.gz"
    cut.write_bytes(blob[: int(len(blob) * 0.9)])
    logs = [cut, tmp_path / "day2.jsonl"]
    s = run_scan(logs, tmp_path / "scan", accounts=small_traffic / "accounts.jsonl", progress=False, write_html=False)
    rejects = _jsonl(tmp_path / "scan" / "rejected.jsonl")
    damage = [r for r in rejects if "corrupt or truncated" in r["reason"]]
    assert len(damage) == 1 and damage[0]["source"] == str(cut) and s["damaged_inputs"] == [damage[0]["reason"]]
    read_whole = damage[0]["line"] - 2  # the line before the damage report is the one cut short
    assert 0.8 * half < read_whole < half
    assert s["requests"] == read_whole + (len(lines) - half)  # nothing else lost
    r = run_replay(logs, tmp_path / "replay", accounts=small_traffic / "accounts.jsonl", progress=False)
    assert r["requests"] == s["requests"] and r["damaged_inputs"] == s["damaged_inputs"]
    done = subprocess.run([sys.executable, "-m", "distillguard.cli", "scan", *map(str, logs), "--out", str(tmp_path / "cli"),
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0 and "warning: " in done.stderr and "corrupt or truncated" in done.stderr
