"""Ingest: SQL/Python parity, every bad-input case, compression, other formats, idempotent store."""

from __future__ import annotations

import gzip
import zlib
from datetime import datetime, timezone
import math
import subprocess
import sys

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distillguard.errors import InputError, RecordRejected
from distillguard.ingest import EventReader, EventStore, RejectWriter, load_events
from distillguard.schema import EVENT_COLUMNS, event_from_record

from .records import BAD, GOOD


def _write_lines(path, lines):
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def _read(paths, tmp_path, **kw):
    rej_path = tmp_path / "rejected.jsonl"
    with RejectWriter(rej_path) as rej:
        store = EventStore(":memory:")
        reader = EventReader(rejects=rej, con=store.con, **kw)
        for b in reader.iter_batches(paths):
            store.append(b)
        store.finish_run(rej)
        rows = store.con.sql(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events ORDER BY _src, _line").to_arrow_table().to_pylist()
    rejects = [orjson.loads(x) for x in rej_path.read_bytes().splitlines()]
    return rows, rejects, reader.stats


def test_sql_and_python_normalisers_agree(tmp_path):
    log = _write_lines(tmp_path / "log.jsonl", [orjson.dumps(r) for r in GOOD])
    rows, rejects, _ = _read([log], tmp_path)
    assert rejects == []
    assert len(rows) == len(GOOD)
    for rec, sql_ev in zip(GOOD, rows):
        py_ev = event_from_record(rec)
        for col in EVENT_COLUMNS:
            a, b = py_ev[col], sql_ev[col]
            if isinstance(a, float) and isinstance(b, float):
                assert math.isclose(a, b), (rec["request_id"], col, a, b)
            else:
                assert a == b, (rec["request_id"], col, a, b)


def test_chat_fields_are_extracted():
    ev = event_from_record(GOOD[0])
    assert ev["prompt"] == "Explain step by step"
    assert ev["system_prompt"] == "You are helpful."
    assert (ev["n_messages"], ev["n_user_msgs"], ev["n_assistant_msgs"]) == (4, 2, 1)
    assert ev["logprobs"] and ev["top_logprobs"] == 5 and ev["n"] == 2 and ev["stream"]
    assert ev["finish_reason"] == "length" and ev["reasoning_tokens"] == 100
    assert ev["ts"] == 1772352000.0  # 10:00 at +02:00 is 08:00 UTC


@pytest.mark.parametrize("line,reason", BAD)
def test_python_normaliser_rejects_with_same_reason(line, reason):
    try:
        rec = orjson.loads(line)
    except orjson.JSONDecodeError:
        assert reason == "line is not valid JSON"
        return
    with pytest.raises(RecordRejected) as exc:
        event_from_record(rec)
    assert exc.value.reason.startswith(reason)


def test_every_bad_line_is_reported_and_the_rest_kept(tmp_path):
    huge_prompt = "x" * (5 * 1024 * 1024)
    huge = dict(GOOD[1], request_id="huge", request={"prompt": huge_prompt})
    lines = [orjson.dumps(GOOD[0])]
    lines += [b.encode() for b, _ in BAD]
    lines += [
        b"\x00\xff\xfe\x89PNG garbage",  # binary garbage, not UTF-8
        orjson.dumps(GOOD[1])[:25],  # truncated line
        orjson.dumps(huge),  # 5 MB prompt: valid
        orjson.dumps(dict(GOOD[2], extra_top={"deep": [1, 2]})),  # unknown fields: accepted
        orjson.dumps(GOOD[0]),  # duplicate request id
        b"",  # blank line: skipped, counted
    ]
    log = _write_lines(tmp_path / "log.jsonl", lines)
    rows, rejects, stats = _read([log], tmp_path, chunk_bytes=1 << 16)
    kept = {r["request_id"] for r in rows}
    assert kept == {"c1", "huge", "c3"}
    assert next(r for r in rows if r["request_id"] == "huge")["prompt_chars"] == len(huge_prompt)
    by_line = {r["line"]: r["reason"] for r in rejects}
    for i, (_, reason) in enumerate(BAD, start=2):
        assert by_line[i].startswith(reason), (i, by_line[i], reason)
    n = len(BAD) + 1
    assert by_line[n + 1] == "line is not valid UTF-8"
    assert by_line[n + 2] == "line is not valid JSON"
    assert by_line[n + 5].startswith("duplicate request_id 'c1'")
    assert len(rejects) == len(BAD) + 3
    assert stats.blank == 1
    assert stats.lines == len(lines) + 0  # blank line counted as a line
    # nothing silently dropped: accepted + rejected + blank == lines
    assert len(rows) + len(rejects) + stats.blank == stats.lines
    assert all(len(r["raw"] or "") <= 2000 for r in rejects)


@pytest.mark.parametrize("keep_response_text", [True, False])  # the slow path, and the fast path of scans
def test_timestamps_that_are_no_time_are_rejected(tmp_path, keep_response_text):
    """DuckDB's JSON parser reads NaN and 1e400 (infinity); a scan used to fail on them mid-way
    (hour buckets cast to BIGINT). They, and numbers past year 9999, are rejected with a reason."""
    ok = orjson.dumps(GOOD[0]).decode()
    line = '{"request_id": "%s", "timestamp": %s, "account_id": "a", "endpoint": "e", "request": {"messages": []}}'
    odd = ["NaN", "-Infinity", "1e400", "1e300", "253402300800"]
    log = _write_lines(tmp_path / "log.jsonl", [ok] + [line % (f"t{i}", v) for i, v in enumerate(odd)] + [line % ("edge", "253402300799")])
    rows, rejects, _ = _read([log], tmp_path, keep_response_text=keep_response_text)
    assert sorted(r["request_id"] for r in rows) == ["c1", "edge"]  # 9999-12-31T23:59:59Z is a time
    assert [r["line"] for r in rejects] == [2, 3, 4, 5, 6]
    assert all(r["reason"].startswith("field 'timestamp' is out of range") for r in rejects)


def test_a_line_too_long_to_parse_is_rejected_unparsed(tmp_path, monkeypatch):
    """A 200 MB line used to exhaust DuckDB's memory and end the run; lines over MAX_LINE_BYTES are
    rejected with their head, and the rest is read."""
    import distillguard.ingest.lines as lines_mod

    monkeypatch.setattr(lines_mod, "MAX_LINE_BYTES", 4096)
    big = orjson.dumps(dict(GOOD[1], request_id="big", request={"prompt": "x" * 5000}))
    log = _write_lines(tmp_path / "log.jsonl", [orjson.dumps(GOOD[0]), big, b"", orjson.dumps(GOOD[2])])
    rows, rejects, stats = _read([log], tmp_path)
    assert [r["request_id"] for r in rows] == ["c1", "c3"]
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, f"line is 0.0 MB, over the {4096 / 2**20:g} MB a request may be; not parsed")]
    assert rejects[0]["raw"].startswith('{"request_id":"big"')
    assert stats.blank == 1 and len(rows) + len(rejects) + stats.blank == stats.lines  # nothing uncounted


def test_empty_object_and_non_object_lines(tmp_path):
    log = _write_lines(tmp_path / "log.jsonl", ["{}", "null", "42", '"str"'])
    rows, rejects, _ = _read([log], tmp_path)
    assert rows == []
    assert [r["reason"] for r in rejects] == [
        "missing required field 'request_id'",
        "record is not a JSON object but null",
        "record is not a JSON object but integer",
        "record is not a JSON object but string",
    ]


@pytest.mark.parametrize("compress", ["gz", "zst", "none"])
def test_compressed_inputs(tmp_path, compress):
    data = b"".join(orjson.dumps(r) + b"\n" for r in GOOD)
    if compress == "gz":
        path = tmp_path / "log.jsonl.gz"
        path.write_bytes(gzip.compress(data))
    elif compress == "zst":
        path = tmp_path / "log.jsonl.zst"
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path = tmp_path / "log.jsonl"
        path.write_bytes(data.rstrip(b"\n"))  # no final newline
    rows, rejects, _ = _read([path], tmp_path, chunk_bytes=256)
    assert [r["request_id"] for r in rows] == [r["request_id"] for r in GOOD]
    assert rejects == []


def test_truncated_gzip_reports_and_keeps_earlier_lines(tmp_path):
    data = b"".join(orjson.dumps(dict(GOOD[1], request_id=f"r{i}")) + b"\n" for i in range(5000))
    blob = gzip.compress(data)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(blob[: len(blob) // 2])
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(orjson.dumps(dict(GOOD[1], request_id="after")) + b"\n")
    # every line whole before the cut: what zlib decodes of the bytes that are there
    readable = zlib.decompressobj(31).decompress(blob[: len(blob) // 2])
    whole = readable.count(b"\n")
    for chunk_bytes in (4096, 64 << 20):  # the cut inside a later chunk, and inside the first
        rej_path = tmp_path / f"rejected-{chunk_bytes}.jsonl"
        with RejectWriter(rej_path) as rej:
            reader = EventReader(rejects=rej, chunk_bytes=chunk_bytes)
            got = [r for b in reader.iter_batches([path, ok]) for r in b.column("request_id").to_pylist()]
        # every whole line before the damage is kept, and the next file is read
        assert got == [f"r{i}" for i in range(whole)] + ["after"]
        rejects = [orjson.loads(x) for x in rej_path.read_bytes().splitlines()]
        cut, damage = rejects
        assert cut["line"] == whole + 1  # the line cut short
        assert cut["reason"] == "line is not valid JSON, and the file ends inside it (cut short mid-write?)"
        assert cut["raw"] == readable[readable.rindex(b"\n") + 1 :].decode()[:len(cut["raw"])]
        assert damage["line"] == whole + 2 and "corrupt or truncated" in damage["reason"]
        assert damage["source"] == str(path) and reader.stats.damaged == [damage["reason"]]


def test_a_plain_log_cut_short_is_reported_as_damaged(tmp_path):
    """An uncompressed log cut mid-write ends inside a record: that line is rejected as the end of a
    file cut short and the file is reported as damaged, once; the lines before it and the next file are read.
    A last line without its newline that is a whole record, or a bad line followed by a newline, is no damage."""
    recs = [orjson.dumps(dict(GOOD[1], request_id=f"r{i}")) + b"\n" for i in range(300)]
    data = b"".join(recs)
    cut_at = len(data) - len(recs[-1]) // 2  # inside the last record
    (tmp_path / "cut.jsonl").write_bytes(data[:cut_at])
    (tmp_path / "ok.jsonl").write_bytes(orjson.dumps(dict(GOOD[1], request_id="after")))  # no newline: whole
    (tmp_path / "bad.jsonl").write_bytes(data[: len(data) - len(recs[-1])] + b"{oops\n")
    for chunk_bytes in (4096, 64 << 20):  # the cut in a later chunk, and in the first
        (out := tmp_path / str(chunk_bytes)).mkdir()
        rows, rejects, stats = _read([tmp_path / "cut.jsonl", tmp_path / "ok.jsonl"], out, chunk_bytes=chunk_bytes)
        assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(299)] + ["after"]
        assert [(r["line"], r["reason"]) for r in rejects] == [
            (300, "line is not valid JSON, and the file ends inside it (cut short mid-write?)")]
        assert len(stats.damaged) == 1 and stats.damaged[0].startswith(f"{tmp_path / 'cut.jsonl'}: the file ends inside line 300")
        assert stats.per_file[str(tmp_path / "cut.jsonl")]["damaged"] == 1
    rows, rejects, stats = _read([tmp_path / "bad.jsonl"], tmp_path)
    assert [(r["line"], r["reason"]) for r in rejects] == [(300, "line is not valid JSON")] and stats.damaged == []


def test_zstd_frames_and_a_zstd_log_cut_short(tmp_path):
    """Two zstd frames one after the other are one log; a log cut inside a frame is read up to the
    cut and reported (zstandard's own reader stops there without a word)."""
    rec = [orjson.dumps(dict(GOOD[1], request_id=f"r{i}")) + b"\n" for i in range(6000)]
    two = zstandard.ZstdCompressor().compress(b"".join(rec[:3000])) + zstandard.ZstdCompressor().compress(b"".join(rec[3000:]))
    (tmp_path / "two.jsonl.zst").write_bytes(two)
    (tmp_path / "cut.jsonl.zst").write_bytes(two[: len(two) - 200])  # inside the second frame
    rows, rejects, stats = _read([tmp_path / "two.jsonl.zst"], tmp_path)
    assert [r["request_id"] for r in rows] == [f"r{i}" for i in range(6000)] and rejects == [] and not stats.damaged
    rows, rejects, stats = _read([tmp_path / "cut.jsonl.zst"], tmp_path)
    first = zstandard.ZstdDecompressor().decompressobj()
    readable = first.decompress(two[: len(two) - 200])  # the first frame whole
    readable += zstandard.ZstdDecompressor().decompressobj().decompress(first.unused_data)  # what the cut one gives
    kept = [r["request_id"] for r in rows]
    assert kept == [f"r{i}" for i in range(readable.count(b"\n"))] and 3000 < len(kept) < 6000  # every whole line
    assert len(stats.damaged) == 1 and "zstd stream ended inside a frame" in stats.damaged[0]
    assert rejects[-1]["line"] == len(kept) + 2 and "corrupt or truncated" in rejects[-1]["reason"]
    (tmp_path / "bad.jsonl.zst").write_bytes(two[:3000] + b"\x00" * 64 + two[3064:])  # corrupt inside the first frame
    rows, rejects, stats = _read([tmp_path / "bad.jsonl.zst"], tmp_path)
    assert len(stats.damaged) == 1 and "corrupt" in stats.damaged[0]


def test_parquet_with_struct_and_json_string_columns(tmp_path):
    recs = [dict(r) for r in GOOD[:4]]
    for r in recs:
        r.pop("unknown_field", None)
    table = pa.Table.from_pylist(
        [
            {
                "request_id": r["request_id"],
                "timestamp": r["timestamp"] if isinstance(r["timestamp"], str) else
                datetime.fromtimestamp(r["timestamp"], tz=timezone.utc).isoformat(),
                "account_id": r["account_id"],
                "endpoint": r["endpoint"],
                "request": orjson.dumps(r["request"]).decode(),
                "response": orjson.dumps(r["response"]).decode() if r.get("response") else None,
            }
            for r in recs
        ]
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    rows, rejects, _ = _read([path], tmp_path)
    assert rejects == []
    assert [r["prompt"] for r in rows] == [event_from_record(r)["prompt"] for r in recs]


def test_a_parquet_file_that_cannot_be_read_is_reported_and_the_rest_read(tmp_path):
    rows = [{"request_id": f"r{i}", "timestamp": 1772409600 + i, "account_id": "a", "endpoint": "/v1/chat/completions",
             "request": orjson.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}).decode()} for i in range(3000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "ok.parquet", row_group_size=500)
    blob = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(blob[: len(blob) // 2])  # no footer: nothing of it can be read
    got, rejects, stats = _read([tmp_path / "cut.parquet", tmp_path / "ok.parquet"], tmp_path)
    assert len(got) == 3000  # the other file is read
    assert [(r["source"], r["line"]) for r in rejects] == [(str(tmp_path / "cut.parquet"), 1)]
    assert rejects[0]["reason"].startswith("cannot read Parquet file") and stats.damaged == [rejects[0]["reason"]]


def test_a_parquet_value_too_long_to_parse_is_rejected_and_the_rest_read(tmp_path, monkeypatch):
    """The line cap holds for Parquet too, whose rows become lines in DuckDB, not by splitting bytes:
    a row over MAX_LINE_BYTES is rejected with its head, as a JSON line would be."""
    import distillguard.ingest.lines as lines_mod

    monkeypatch.setattr(lines_mod, "MAX_LINE_BYTES", 4096)
    rows = [{"request_id": f"r{i}", "timestamp": 1772409600 + i, "account_id": "a", "endpoint": "/v1/chat/completions",
             "request": orjson.dumps({"messages": [{"role": "user", "content": "x" * (9000 if i == 1 else 10)}]}).decode()}
            for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "log.parquet")
    got, rejects, stats = _read([tmp_path / "log.parquet"], tmp_path)
    assert [r["request_id"] for r in got] == ["r0", "r2"]
    assert [(r["line"], r["reason"][:8]) for r in rejects] == [(2, "line is ")]
    assert '"request_id":"r1"' in rejects[0]["raw"] and len(rejects[0]["raw"]) <= 8192
    assert stats.blank == 0 and len(got) + len(rejects) == stats.lines  # nothing uncounted


def test_litellm_spend_logs_jsonl_and_csv(tmp_path):
    row = {
        "request_id": "chatcmpl-1", "call_type": "acompletion", "api_key": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
        "startTime": "2026-02-01 10:00:00", "endTime": "2026-02-01 10:00:01.5", "model": "gpt-4o",
        "user": "u1", "team_id": "team-a", "end_user": "cust-9", "requester_ip_address": "198.51.100.4",
        "messages": orjson.dumps([{"role": "user", "content": "Translate to French: cat"}]).decode(),
        "response": orjson.dumps({"choices": [{"message": {"content": "chat"}, "finish_reason": "stop"}]}).decode(),
        "prompt_tokens": 7, "completion_tokens": 2, "status": "success",
    }
    jl = _write_lines(tmp_path / "spend.jsonl", [orjson.dumps(row), orjson.dumps(dict(row, request_id="x2", status="failure"))])
    rows, rejects, _ = _read([jl], tmp_path)
    assert rejects == []
    assert rows[0]["account_id"] == "team-a" and rows[0]["client_ip"] == "198.51.100.4"
    assert rows[0]["prompt"] == "Translate to French: cat" and rows[0]["completion_tokens"] == 2
    assert rows[0]["latency_ms"] == pytest.approx(1500.0)
    assert rows[1]["status_code"] == 500
    import csv

    cp = tmp_path / "spend.csv"
    with open(cp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        w.writeheader()
        w.writerow(row)
    rows, rejects, _ = _read([cp], tmp_path)
    assert len(rows) == 1 and rows[0]["end_user"] == "cust-9"


def test_whole_file_formats_cut_short_keep_what_was_read(tmp_path):
    """LiteLLM exports and account files are read whole: one cut short used to end the run with a
    bare EOFError; now every row before the cut is kept and the damage is reported."""
    from distillguard.ingest.accounts import load_accounts

    rows = [orjson.dumps({"request_id": f"l{i}", "call_type": "completion", "api_key": "k", "user": "u", "team_id": "t",
                          "startTime": "2026-02-01 10:00:00", "model": "m",
                          "messages": [{"role": "user", "content": f"question number {i}"}]}) for i in range(4000)]
    blob = gzip.compress(b"\n".join(rows) + b"\n")
    (tmp_path / "spend.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    readable = zlib.decompressobj(31).decompress(blob[: len(blob) // 2])
    got, rejects, stats = _read([tmp_path / "spend.jsonl.gz"], tmp_path, fmt="litellm")
    assert [r["request_id"] for r in got] == [f"l{i}" for i in range(readable.count(b"\n"))]
    assert len(stats.damaged) == 1 and "corrupt or truncated" in rejects[-1]["reason"]
    accts = b"".join(orjson.dumps({"account_id": f"a{i}", "created_at": 1767225600 + i}) + b"\n" for i in range(4000))
    blob = gzip.compress(accts)
    (tmp_path / "accounts.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with RejectWriter(tmp_path / "acc-rejects.jsonl") as rej:
        table = load_accounts(tmp_path / "accounts.jsonl.gz", rejects=rej)
    whole = zlib.decompressobj(31).decompress(blob[: len(blob) // 2]).count(b"\n")
    assert table.num_rows == whole  # every whole line kept (the one cut short is rejected)
    reasons = [orjson.loads(x)["reason"] for x in (tmp_path / "acc-rejects.jsonl").read_bytes().splitlines()]
    assert reasons[0].startswith("account file is damaged after line") and len(reasons) == 2


@pytest.mark.parametrize("compress", ["none", "gz", "zst"])
def test_a_utf8_bom_at_the_start_of_a_file_is_dropped(tmp_path, compress):
    """Windows tools write a byte order mark; left in, the first record was rejected as invalid JSON."""
    from distillguard.ingest.accounts import load_accounts

    data = b"\xef\xbb\xbf" + orjson.dumps(GOOD[0]) + b"\r\n" + orjson.dumps(GOOD[1]) + b"\r\n"
    accts = b"\xef\xbb\xbf" + orjson.dumps({"account_id": "a1", "verified": True}) + b"\n"
    pack = {"none": lambda b: b, "gz": gzip.compress, "zst": zstandard.ZstdCompressor().compress}[compress]
    suffix = {"none": "", "gz": ".gz", "zst": ".zst"}[compress]
    (tmp_path / f"log.jsonl{suffix}").write_bytes(pack(data))
    (tmp_path / f"accounts.jsonl{suffix}").write_bytes(pack(accts))
    rows, rejects, _ = _read([tmp_path / f"log.jsonl{suffix}"], tmp_path)
    assert [r["request_id"] for r in rows] == ["c1", "c2"] and rejects == []
    assert load_accounts(tmp_path / f"accounts.jsonl{suffix}").column("account_id").to_pylist() == ["a1"]


def test_openai_batch_pair(tmp_path):
    inp = [{"custom_id": f"t{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"Q{i}"}], "max_tokens": 50}} for i in range(3)]
    out = [{"id": f"batch_req_{i}", "custom_id": f"t{i}", "response": {"status_code": 200, "request_id": f"req{i}",
            "body": {"created": 1767225600 + i, "choices": [{"message": {"content": f"A{i}"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}}}
           for i in range(3)]
    out.append({"id": "batch_req_x", "custom_id": "missing", "response": {"status_code": 200, "body": {"choices": []}}})
    _write_lines(tmp_path / "job_input.jsonl", [orjson.dumps(x) for x in inp])
    op = _write_lines(tmp_path / "job_output.jsonl", [orjson.dumps(x) for x in out])
    rows, rejects, _ = _read([op], tmp_path, batch_account="acct-batch")
    assert [r["prompt"] for r in rows] == ["Q0", "Q1", "Q2"]
    assert all(r["account_id"] == "acct-batch" and r["batch_id"] == "job_output" for r in rows)
    assert len(rejects) == 1 and "request" in rejects[0]["reason"]


def test_store_is_idempotent_on_request_id(tmp_path):
    log = _write_lines(tmp_path / "log.jsonl", [orjson.dumps(r) for r in GOOD])
    db = tmp_path / "s.duckdb"
    for run in range(2):
        store = EventStore(db)
        with RejectWriter(tmp_path / f"rej{run}.jsonl") as rej:
            for b in EventReader(rejects=rej, con=store.con).iter_batches([log]):
                store.append(b)
            dups = store.finish_run(rej)
        assert store.count() == len(GOOD)
        assert dups == (0 if run == 0 else len(GOOD))
        store.close()


def test_load_events_orders_by_time(tmp_path):
    log = _write_lines(tmp_path / "log.jsonl", [orjson.dumps(r) for r in reversed(GOOD)])
    t = load_events([log])
    ts = t.column("ts").to_pylist()
    assert ts == sorted(ts) and t.num_rows == len(GOOD)


def test_missing_input_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        list(EventReader(rejects=RejectWriter(tmp_path / "r.jsonl")).iter_batches([tmp_path / "nope.jsonl"]))


def test_ingest_cli_end_to_end(tmp_path):
    log = _write_lines(tmp_path / "log.jsonl", [orjson.dumps(r) for r in GOOD] + ["garbage"])
    db = tmp_path / "t.duckdb"
    cmd = [sys.executable, "-m", "distillguard.cli", "ingest", str(log), "--db", str(db)]
    for expected_new in (len(GOOD), 0):
        p = subprocess.run(cmd, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert f"ingested {expected_new:,} new events" in p.stderr.replace("\n", " ")
    bad = subprocess.run([sys.executable, "-m", "distillguard.cli", "ingest", str(tmp_path / "nope.jsonl"), "--db", str(db)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr
