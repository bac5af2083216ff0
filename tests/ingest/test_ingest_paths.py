"""The scan ingest (fast path, slow path for the rest) gives exactly the table and the rejects that the
slow path alone gives, on a log that mixes every shape with malformed lines."""

from __future__ import annotations

import random

import orjson
import pytest
import pyarrow as pa

from distillguard.ingest import EventReader, EventStore, RejectWriter
from distillguard.ingest.normalize import fast_normalize_sql
from distillguard.ingest.reader import connect
from distillguard.schema import EVENT_COLUMNS

from .records import BAD, GOOD
from .test_normalize_fast import _CHAT, _mutate

_PROMPT_STYLE = [  # requests without messages that the fast path takes
    {"request_id": "p1", "timestamp": 1, "account_id": "a", "endpoint": "/v1/completions", "request": {"model": "m", "prompt": "Once"}},
    {"request_id": "p2", "timestamp": 2, "account_id": "a", "endpoint": "/v1/completions",
     "request": {"prompt": ["first", "second", 5], "max_tokens": 3}, "response": {"choices": [{"text": "x", "finish_reason": "stop"}]}},
    {"request_id": "p3", "timestamp": 3, "account_id": "a", "endpoint": "/v1/responses",
     "request": {"input": "What?", "instructions": "Be terse", "reasoning": {"effort": "high"}},
     "response": {"output_text": "4", "usage": {"input_tokens": 5, "output_tokens": 1}}},
    {"request_id": "p4", "timestamp": 4, "account_id": "a", "endpoint": "/v1/embeddings", "request": {"input": ["alpha", "beta"]}},
    {"request_id": "p5", "timestamp": 5, "account_id": "a", "endpoint": "/v1/completions", "request": {"messages": None, "prompt": "n"}},
    {"request_id": "p6", "timestamp": 6, "account_id": "a", "endpoint": "/v1/completions", "request": {}},
]  # fmt: skip


def _mixed_log(path, n: int, seed: int = 7) -> list[bytes]:
    """Good records of every shape, their random mutations, malformed lines, blank lines, bad UTF-8
    and duplicates, shuffled."""
    rng = random.Random(seed)
    base = [_CHAT, *GOOD, *_PROMPT_STYLE]
    lines = [orjson.dumps({**rng.choice(base), "request_id": f"g{i}"}) for i in range(n)]
    lines += [orjson.dumps({**_mutate(rng.choice(base), rng), "request_id": f"m{i}"}) for i in range(n // 2)]
    lines += [(x if isinstance(x, bytes) else x.encode()) for x, _ in BAD] * 3
    lines += [b"", b"", b"\xff\xfe not utf-8", orjson.dumps(GOOD[0]), orjson.dumps(GOOD[0])]
    rng.shuffle(lines)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def _ingest(path, tmp_path, name: str, *, slow_only: bool, overlap: bool = False):
    rej_path = tmp_path / f"rejected-{name}.jsonl"
    store = EventStore(":memory:")
    with RejectWriter(rej_path) as rej:
        reader = EventReader(rejects=rej, con=store.cursor() if overlap else store.con, prompt_max_chars=40,
                             keep_response_text=False, chunk_bytes=1 << 16)
        if slow_only:
            reader._fast_sql = None  # every line through the slow path (what ingest did before the fast path)
        n_batches = None
        if overlap:  # normalising on a thread while inserting
            store.append_all(reader, [path])
        else:
            n_batches = 0
            for batch in reader.iter_batches([path]):
                store.append(batch)
                n_batches += 1
        dups = store.finish_run(rej)
    cols = ", ".join([*EVENT_COLUMNS, "_src", "_line", "_run"])
    rows = store.con.sql(f"SELECT {cols} FROM events ORDER BY rowid").to_arrow_table()
    store.close()
    return rows, rej_path.read_bytes(), reader.stats, dups, n_batches


def test_fast_path_ingest_gives_the_slow_path_table_and_rejects(tmp_path):
    log = tmp_path / "mixed.jsonl"
    lines = _mixed_log(log, 800)
    fast, fast_rej, fast_stats, fast_dups, n_batches = _ingest(log, tmp_path, "fast", slow_only=False)
    slow, slow_rej, slow_stats, slow_dups, _ = _ingest(log, tmp_path, "slow", slow_only=True)
    assert n_batches > 3  # several chunks
    assert fast.num_rows > 600
    # identical rows in the same physical order; response_text is not kept by either
    assert fast.to_pylist() == slow.to_pylist()
    assert fast_rej == slow_rej  # same lines, same reasons, same raw text, same order
    assert (fast_stats.lines, fast_stats.accepted, fast_stats.rejected, fast_stats.blank) == (
        slow_stats.lines, slow_stats.accepted, slow_stats.rejected, slow_stats.blank)
    assert fast_dups == slow_dups > 0
    n_rejected = len(fast_rej.splitlines())
    assert fast.num_rows + n_rejected + fast_stats.blank == len(lines)


def test_overlapped_ingest_gives_the_same_table_rejects_and_duplicates(tmp_path):
    """append_all with the reader on its own cursor (normalising on a thread) keeps the physical order
    that decides which copy of a duplicated request id is the first one."""
    log = tmp_path / "mixed.jsonl"
    _mixed_log(log, 3000, seed=11)
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join(lines + lines[: len(lines) // 3]) + b"\n")  # duplicates far apart, in later chunks
    serial, serial_rej, serial_stats, serial_dups, _ = _ingest(log, tmp_path, "serial", slow_only=False)
    over, over_rej, over_stats, over_dups, _ = _ingest(log, tmp_path, "overlap", slow_only=False, overlap=True)
    assert serial.num_rows > 2000 and serial_dups > 1000
    assert over.to_pylist() == serial.to_pylist()
    assert over_rej == serial_rej and over_dups == serial_dups
    assert (over_stats.lines, over_stats.accepted, over_stats.rejected) == (serial_stats.lines, serial_stats.accepted, serial_stats.rejected)


def test_an_error_while_normalising_on_the_thread_reaches_the_caller(tmp_path):
    store = EventStore(":memory:")
    with RejectWriter(tmp_path / "r.jsonl") as rej:
        reader = EventReader(rejects=rej, con=store.cursor())
        with pytest.raises(Exception, match="input not found"):
            store.append_all(reader, [tmp_path / "missing.jsonl"])


def test_prompt_style_requests_take_the_fast_path():
    con = connect()
    lines = [orjson.dumps(r).decode() for r in _PROMPT_STYLE]
    not_fast = [  # shapes the fast path leaves to the slow path
        {**_PROMPT_STYLE[0], "request": {"messages": "hi"}},  # messages of the wrong type
        {**_PROMPT_STYLE[0], "request": "hi"},  # request not an object
        {**_PROMPT_STYLE[0], "request": {"input": [{"role": "user", "content": "q"}]}},  # Responses-API messages
        {**_PROMPT_STYLE[0], "response": []},  # response not an object
        [1, 2],
    ]
    lines += [orjson.dumps(r).decode() for r in not_fast] + ["{not json"]
    con.register("_t", pa.table({"line_no": pa.array(range(1, len(lines) + 1), pa.int64()), "line": pa.array(lines)}))
    fast = con.sql(fast_normalize_sql("_t")).to_arrow_table().column("fast").to_pylist()
    assert fast == [True] * len(_PROMPT_STYLE) + [False] * (len(not_fast) + 1)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize("compress", [False, True])
def test_line_chunks_split_every_way_like_python(tmp_path, chunk_bytes, compress):
    import gzip

    from distillguard.ingest.lines import iter_line_chunks

    rng = random.Random(chunk_bytes)
    pieces = [b"", b"\r", b" ", b'{"a": 1}', "é".encode() * 50, b"\xff\xfe", b"x" * 3000, b"[1,\r2]"]
    lines = [rng.choice(pieces) + rng.choice([b"", b"\r"]) for _ in range(400)] + [b"last"]
    data = b"\n".join(lines)  # no final newline
    path = tmp_path / ("log.jsonl.gz" if compress else "log.jsonl")
    path.write_bytes(gzip.compress(data) if compress else data)
    got: dict[int, str | None] = {}
    bad: dict[int, bytes] = {}
    for c in iter_line_chunks(path, chunk_bytes=chunk_bytes, prefetch=chunk_bytes > 100):
        assert c.first_line == len(got) + 1
        for i, x in enumerate(c.lines.to_pylist()):
            got[c.first_line + i] = x
        bad.update(c.bad_utf8)
    expect = data.split(b"\n")
    assert len(got) == len(expect)
    for i, raw in enumerate(expect, start=1):
        with_nl = raw + (b"\n" if i < len(expect) else b"")
        if raw in (b"", b"\r") and i < len(expect):
            assert got[i] is None and i not in bad  # blank
        else:
            try:
                assert got[i] == with_nl.decode("utf-8")
            except UnicodeDecodeError:
                assert got[i] is None and bad[i] == raw.rstrip(b"\r\n")


def _store_run(paths, tmp_path, name: str, keep_in_memory: float):
    """Ingest ``paths`` overlapped (as scan does) into a store that keeps up to ``keep_in_memory`` of its
    1 GB limit as Arrow; then delete account a2's events, as scan deletes the unauthenticated ones."""
    rej_path = tmp_path / f"rejected-{name}.jsonl"
    store = EventStore(":memory:", memory_limit="1GB", keep_in_memory=keep_in_memory)
    with RejectWriter(rej_path) as rej:
        reader = EventReader(rejects=rej, con=store.cursor(), prompt_max_chars=40, keep_response_text=False, chunk_bytes=1 << 16)
        store.append_all(reader, paths)
        dups = store.finish_run(rej)
    kept = store._arrow is not None
    deleted = store.delete_where("account_id = 'a2'")
    cols = ", ".join([*EVENT_COLUMNS, "_src", "_line", "_run"])
    rows = store.con.sql(f"SELECT {cols} FROM events ORDER BY _src, _line").to_arrow_table()
    n = store.count()
    store.close()
    return rows, rej_path.read_bytes(), dups, deleted, n, kept


@pytest.mark.parametrize("share", [0.5, 2e-4])
def test_events_kept_in_memory_give_the_table_s_rows_duplicates_and_deletes(tmp_path, share):
    """A store that keeps the log as Arrow (all of it, or past its budget after a few batches, when it
    goes to the table after all) gives the table's rows, duplicates (the same file twice, and copies far
    apart in one file) and deletions."""
    log = tmp_path / "mixed.jsonl"
    _mixed_log(log, 3000, seed=5)
    lines = log.read_bytes().splitlines()
    log.write_bytes(b"\n".join(lines + lines[: len(lines) // 3]) + b"\n")
    table = _store_run([log, log], tmp_path, "table", 0.0)
    arrow = _store_run([log, log], tmp_path, "arrow", share)
    assert table[5] is False and arrow[5] is (share == 0.5)  # kept as Arrow only when it fits
    assert table[0].num_rows > 2000 and table[2] > 3000 and table[3] > 0  # duplicates and deletions to agree on
    assert arrow[0].to_pylist() == table[0].to_pylist()
    assert arrow[1:5] == table[1:5]  # rejects (same order, same reasons), duplicates, deleted, count


def test_a_run_kept_in_memory_goes_to_the_table_when_more_events_come(tmp_path):
    log = tmp_path / "mixed.jsonl"
    _mixed_log(log, 300, seed=3)
    store = EventStore(":memory:", memory_limit="1GB", keep_in_memory=0.5)
    with RejectWriter(tmp_path / "r.jsonl") as rej:
        reader = EventReader(rejects=rej, con=store.cursor(), keep_response_text=False)
        store.append_all(reader, [log])
        first_dups = store.finish_run(rej)
        n = store.count()
        assert store._arrow is not None and n > 200
        store.append_all(reader, [log])  # the same requests again: every one a duplicate of a kept one
        assert store.finish_run(rej) == n + first_dups
    assert store._arrow is None and store.count() == n
    assert store.con.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'events'").fetchall()[0][0] == 1
