"""Streaming replay: the same requests in the same order as the exact (load, dedupe, sort) path, and a
fall back to that path, with nothing lost or reported twice, when the log is not in time order."""

from __future__ import annotations

import gzip
import random

import orjson
import pyarrow as pa
import pytest

from distillguard.detect.replay import _interned_words, _SeenIds, _replay_sql, run_replay, stream_derived
from distillguard.features.derive import SCAN_CHARS
from distillguard.ingest import EventReader, EventStore, RejectWriter
from distillguard.ingest.reader import connect


def _jsonl(p):
    return [orjson.loads(x) for x in p.read_bytes().splitlines() if x.strip()]


def _rec(i: int, ts: float, account: str, prompt: str) -> bytes:
    return orjson.dumps({
        "request_id": f"r{i:05d}", "timestamp": ts, "account_id": account, "endpoint": "/v1/chat/completions",
        "client_ip": f"203.0.113.{i % 7}", "user_agent": "python-httpx/0.27",
        "request": {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 64},
        "response": {"choices": [{"message": {"content": "ok"}, "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 64}},
    })


def _tied_log(path, n=3000):
    """Many requests share each timestamp, and within one timestamp the lines come in *descending*
    request-id order, so a chunk boundary inside a run of equal timestamps must not decide the order."""
    rnd = random.Random(3)
    lines = []
    for i in range(n):
        ts = 1772409600 + (i // 40) * 30.0  # 40 requests per timestamp, 30 s apart
        words = " ".join(rnd.choice(["alpha", "beta", "gamma", "delta", "omega", "sigma", "theta"]) for _ in range(8))
        lines.append((ts, -i, _rec(i, ts, f"acct{rnd.randrange(25)}", f"Explain step by step: {words} {i}")))
    lines.sort(key=lambda x: (x[0], x[1]))
    path.write_bytes(b"\n".join(x[2] for x in lines) + b"\n")
    return path


def _sorted_rows(path) -> list[dict]:
    store = EventStore(":memory:")
    with RejectWriter(path.parent / "rej-sorted.jsonl") as rej:
        store.append_all(EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=SCAN_CHARS, keep_response_text=False), [path])
        store.finish_run(rej)
    return store.con.sql(_replay_sql()).to_arrow_table().to_pylist()


def _streamed_rows(path, **reader_kw) -> list[dict]:
    con = connect()
    with RejectWriter(path.parent / "rej-stream.jsonl") as rej:
        reader = EventReader(rejects=rej, con=con, prompt_max_chars=SCAN_CHARS, keep_response_text=False, **reader_kw)
        batches = list(stream_derived(reader, [path], con, lateness_s=0.0))
    assert len(batches) > 5  # many chunks: the boundaries are exercised
    return pa.concat_tables(batches).to_pylist()


def test_streamed_batches_equal_the_sorted_query_across_tied_chunk_boundaries(tmp_path):
    log = _tied_log(tmp_path / "tied.jsonl")
    want = _sorted_rows(log)
    got = _streamed_rows(log, chunk_bytes=64 * 1024, first_chunk_bytes=16 * 1024)
    assert len(got) == len(want) == 3000
    assert got == want  # every derived value, the words of each account's first 64 requests, the order
    assert sum(r["words"] is not None for r in got) == 25 * 64  # not vacuous: words stop after 64 per account


def test_streamed_replay_flags_equal_sorted_replay(small_traffic, tmp_path):
    kw = dict(accounts=small_traffic / "accounts.jsonl", progress=False)
    a = run_replay([small_traffic / "traffic.jsonl.gz"], tmp_path / "a", **kw)
    b = run_replay([small_traffic / "traffic.jsonl.gz"], tmp_path / "b", stream=False, **kw)
    assert a["order"] == "streamed" and b["order"] == "sorted" and a["sorted_because"] is None
    assert a["requests"] == b["requests"] and a["flagged_accounts"] == b["flagged_accounts"] > 0
    assert (tmp_path / "a" / "first_flags.jsonl").read_bytes() == (tmp_path / "b" / "first_flags.jsonl").read_bytes()


def test_lines_late_within_the_lateness_still_stream(tmp_path, monkeypatch):
    monkeypatch.setattr("distillguard.detect.replay.STREAM_FIRST_CHUNK_BYTES", 16 * 1024)  # many chunks
    log = _tied_log(tmp_path / "tied.jsonl")
    lines = log.read_bytes().splitlines()
    for i in range(0, len(lines) - 1, 2):  # swap neighbours: each pair's second request is logged first
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    jittered = tmp_path / "jittered.jsonl.gz"
    jittered.write_bytes(gzip.compress(b"\n".join(lines) + b"\n"))
    a = run_replay([jittered], tmp_path / "a", progress=False)
    b = run_replay([log], tmp_path / "b", progress=False, stream=False)
    assert a["order"] == "streamed"
    assert (tmp_path / "a" / "first_flags.jsonl").read_bytes() == (tmp_path / "b" / "first_flags.jsonl").read_bytes()


def test_a_log_out_of_time_order_is_sorted_first_with_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setattr("distillguard.detect.replay.STREAM_FIRST_CHUNK_BYTES", 16 * 1024)  # many chunks
    log = _tied_log(tmp_path / "tied.jsonl")
    lines = log.read_bytes().splitlines()
    # the second half of the log first: its second file-chunk is hours older than the first
    shuffled = tmp_path / "two-halves.jsonl"
    shuffled.write_bytes(b"\n".join(lines[1500:] + lines[:1500]) + b"\nnot json\n")
    a = run_replay([shuffled], tmp_path / "a", progress=False, lateness_s=60.0)
    b = run_replay([shuffled], tmp_path / "b", progress=False, stream=False)
    assert a["order"] == "sorted" and "older than requests already replayed" in a["sorted_because"]
    assert (tmp_path / "a" / "first_flags.jsonl").read_bytes() == (tmp_path / "b" / "first_flags.jsonl").read_bytes()
    assert a["requests"] == 3000 and a["rejected"] == 1
    assert len(_jsonl(tmp_path / "a" / "rejected.jsonl")) == 1  # the aborted stream's rejects are not left behind


def test_a_repeated_request_id_falls_back_and_is_reported_once(tmp_path, monkeypatch):
    monkeypatch.setattr("distillguard.detect.replay.STREAM_FIRST_CHUNK_BYTES", 16 * 1024)  # many chunks
    log = _tied_log(tmp_path / "tied.jsonl")
    lines = log.read_bytes().splitlines()
    dup = tmp_path / "dup.jsonl"
    dup.write_bytes(b"\n".join(lines + [lines[-45]]) + b"\n")  # a request logged again a minute later
    s = run_replay([dup], tmp_path / "out", progress=False)
    assert s["order"] == "sorted" and "repeats" in s["sorted_because"]
    rej = _jsonl(tmp_path / "out" / "rejected.jsonl")
    assert len(rej) == 1 and "duplicate request_id" in rej[0]["reason"] and s["requests"] == 3000


def test_seen_ids_find_repeats_within_and_across_chunks():
    seen = _SeenIds()
    rng = __import__("numpy").random.default_rng(0)
    ids = rng.permutation(100_000).astype("uint64") * 7919
    for i in range(0, 100_000, 5_000):
        assert seen.add_new(ids[i : i + 5_000])
    assert len(seen._runs) < 6  # runs are merged as they grow
    assert not seen.add_new(ids[42_000:42_001])  # seen in an earlier chunk
    assert not seen.add_new(__import__("numpy").array([5, 6, 5], dtype="uint64") + 10**12)  # within one chunk
    assert seen.add_new(__import__("numpy").array([1, 2], dtype="uint64") * 10**13)


@pytest.mark.parametrize("stream", [True, False])
def test_replay_summary_says_how_the_log_was_ordered(small_traffic, tmp_path, stream):
    s = run_replay([small_traffic / "traffic.jsonl.gz"], tmp_path, progress=False, stream=stream)
    saved = orjson.loads((tmp_path / "replay_summary.json").read_bytes())
    assert saved["order"] == ("streamed" if stream else "sorted") == s["order"]


@pytest.mark.parametrize("stream", [True, False])
def test_replay_of_a_log_without_readable_requests_is_an_error(tmp_path, stream):
    from distillguard.errors import InputError

    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    with pytest.raises(InputError, match="no readable requests"):
        run_replay([bad], tmp_path / "out", progress=False, stream=stream)
    assert len(_jsonl(tmp_path / "out" / "rejected.jsonl")) == 2


def test_interned_words_keep_each_row_and_share_one_string_per_word():
    rows = [["the", "cat"], None, [], ["cat", "sat", "the"], None, ["mat"]]
    col = pa.array(rows, type=pa.list_(pa.string()))
    assert _interned_words(col) == rows
    assert _interned_words(col.slice(2)) == rows[2:]  # a slice's offsets do not start at 0
    assert _interned_words(pa.chunked_array([col.slice(0, 2), col.slice(3)])) == rows[:2] + rows[3:]
    got = _interned_words(col)
    assert got[0][1] is got[3][0]  # one object per word, whichever row it came in
    assert _interned_words(pa.array([None, None], type=pa.list_(pa.string()))) == [None, None]
