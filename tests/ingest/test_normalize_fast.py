"""The fast normalisation path (one json_transform per line) gives exactly what the slow path gives."""

from __future__ import annotations

import copy
import random

import orjson
import pyarrow as pa
import pytest

from distillguard.ingest import RejectWriter
from distillguard.ingest.normalize import fast_normalize_sql, slow_normalize_sql
from distillguard.ingest.reader import EventReader, connect

from .records import BAD, GOOD

_VALUES = ["s", "", 0, 7, -3, 2.5, True, False, None, [], [1, "x"], {}, {"a": 1}, [{"role": "user", "content": "q"}],
           {"type": "json_object"}, "2026-01-01T00:00:00Z", 18446744073709551615, 1e300]  # fmt: skip
_CHAT = {
    "request_id": "r", "timestamp": "2026-03-01T10:00:00Z", "account_id": "a", "api_key_id": "k", "client_ip": "198.51.100.4",
    "user_agent": "OpenAI/Python 1.54", "endpoint": "/v1/chat/completions", "status_code": 200, "latency_ms": 12.5,
    "request": {"model": "m", "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "Solve step by step: 2+2"},
                                           {"role": "assistant", "content": "4"}, {"role": "user", "content": "Why? \u00e9\n\"q\""}],
                "temperature": 0.3, "max_tokens": 100, "logprobs": True, "top_logprobs": 3, "n": 2, "stream": False,
                "reasoning_effort": "high", "tools": [{"type": "function"}], "response_format": {"type": "text"}, "user": "u1"},
    "response": {"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
                 "usage": {"prompt_tokens": 9, "completion_tokens": 100, "completion_tokens_details": {"reasoning_tokens": 40}}},
}  # fmt: skip


def _paths(rec, prefix=()):
    """Every (path) to a value inside a record, objects and lists alike."""
    out = []
    items = rec.items() if isinstance(rec, dict) else enumerate(rec) if isinstance(rec, list) else []
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _mutate(rec, rng):
    rec = copy.deepcopy(rec)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(rec)
        if not paths:
            break
        path = rng.choice(paths)
        parent = rec
        for k in path[:-1]:
            parent = parent[k]
        if rng.random() < 0.25 and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rng.choice(_VALUES))
    return rec


def _normalise(lines: list[str], *, fast: bool, tmp_path, with_text: bool) -> list[dict]:
    """Each line's row: through the reader (the fast path, the slow one for the lines it leaves), or
    through the slow path's SQL alone."""
    table = pa.table({"line_no": pa.array(range(1, len(lines) + 1), pa.int64()), "line": pa.array(lines, pa.string())})
    if fast:
        with RejectWriter(tmp_path / "r.jsonl") as rej:
            return EventReader(rejects=rej, keep_response_text=with_text)._normalise_lines(table).to_pylist()
    con = connect()
    con.register("_t", table)
    return con.sql(slow_normalize_sql("_t", with_text=with_text)).to_arrow_table().to_pylist()


def _lines(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    base = [_CHAT] + GOOD
    out = [orjson.dumps(r).decode() for r in base] + [line if isinstance(line, str) else line.decode("utf-8", "replace") for line, _ in BAD]
    out += [orjson.dumps(_mutate(rng.choice(base), rng)).decode() for _ in range(n)]
    return out


@pytest.mark.parametrize("with_text", [False, True], ids=["scan", "with-response-text"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_and_slow_paths_agree_on_examples_and_random_mutations(tmp_path, seed, with_text):
    lines = _lines(seed, 600)
    fast = _normalise(lines, fast=True, tmp_path=tmp_path, with_text=with_text)
    slow = _normalise(lines, fast=False, tmp_path=tmp_path, with_text=with_text)
    assert len(fast) == len(slow) == len(lines)
    for line, a, b in zip(lines, fast, slow):
        assert a == b, line
    if with_text:  # the response text is really read (not NULL on both sides)
        assert fast[0]["response_text"] == "ok"
        assert sum(r["response_text"] is not None for r in fast) > len(lines) // 4


def test_most_chat_lines_take_the_fast_path():
    con = connect()
    lines = [orjson.dumps({**_CHAT, "request_id": f"r{i}"}).decode() for i in range(50)]
    con.register("_t", pa.table({"line_no": pa.array(range(1, 51), pa.int64()), "line": pa.array(lines)}))
    for with_text in (False, True):
        fast = con.sql(fast_normalize_sql("_t", with_text=with_text)).to_arrow_table()
        assert fast.column("fast").to_pylist() == [True] * 50
        assert fast.column("response_text").to_pylist() == (["ok"] * 50 if with_text else [None] * 50)
