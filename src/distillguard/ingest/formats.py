"""Converters from other log formats to traffic-log lines (contracts.md §1).

Each converter yields :class:`~distillguard.ingest.lines.LineChunk` s of traffic-log JSON lines, which
the shared SQL normaliser then validates, so every format gets the same checks and reasons.

- Parquet with the traffic-log columns (``request``/``response`` as structs or JSON strings):
  converted inside DuckDB, no Python per row.
- LiteLLM ``LiteLLM_SpendLogs`` rows (JSON Lines or CSV): ``request_id``; ``startTime`` → timestamp;
  account = ``team_id``, else ``user``, else ``key:<hashed api_key>``; ``api_key`` (already hashed) →
  ``api_key_id``; ``end_user``; ``requester_ip_address`` → ``client_ip``; ``call_type`` → endpoint;
  ``proxy_server_request`` (the body as received) or ``model`` + ``messages`` → request;
  ``response`` plus token counts → response; ``status`` failure → 500; ``endTime - startTime`` → latency.
- OpenAI Batch API: an output file (``custom_id``, ``response.body``) joined on ``custom_id`` with its
  input file (``custom_id``, ``url``, ``body``). The account and time are not in these files: they come
  from the caller (defaults: the file name's stem, the output file's modification time).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterator

import duckdb
import orjson
import pyarrow as pa

from distillguard.errors import InputError
from distillguard.ingest.lines import DamagedStream, LineChunk, read_all_bytes, without_too_long
from distillguard.ingest.rejects import RejectWriter

_BATCH_ROWS = 50_000


def _chunk(lines: list[str | None], first_line: int) -> LineChunk:
    arr, too_long = without_too_long(pa.array(lines, type=pa.large_string()), first_line)
    return LineChunk(first_line=first_line, lines=arr, nbytes=sum(len(x) for x in lines if x), too_long=too_long)


def parquet_line_chunks(path: Path, con: duckdb.DuckDBPyConnection) -> Iterator[LineChunk]:
    """Parquet rows → traffic-log JSON lines, converted in DuckDB."""
    try:
        cols = con.sql(f"DESCRIBE SELECT * FROM read_parquet('{_sql_str(path)}')").fetchall()
    except duckdb.Error as e:  # reported like a damaged log: the other inputs are read
        raise DamagedStream(path, 1, e, f"cannot read Parquet file {path}: {_first_line(e)}; nothing of it was read "
                                        "(re-export it)") from e
    parts = []
    for name, typ, *_ in cols:
        q = '"' + name.replace('"', '""') + '"'
        if typ == "VARCHAR" and name in ("request", "response"):
            expr = f"CASE WHEN json_valid({q}) THEN json({q}) ELSE to_json({q}) END"
        else:
            expr = q
        parts.append(f"{_sql_ident(name)} := {expr}")
    sql = f"SELECT to_json(struct_pack({', '.join(parts)}))::VARCHAR AS line FROM read_parquet('{_sql_str(path)}')"
    line_no = 1
    # A separate cursor: the reader stays open while the normaliser runs queries on ``con``.
    cur = con.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    reader = cur.sql(sql).to_arrow_reader(_BATCH_ROWS)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (duckdb.Error, pa.ArrowException) as e:  # a damaged row group: the rows before it are in
            raise DamagedStream(path, line_no, e, f"{path}: Parquet file damaged after row {line_no - 1:,}: "
                                                  f"{_first_line(e)}; the rows before it were read (re-export it)") from e
        arr = batch.column(0).cast(pa.large_string())
        nbytes = arr.nbytes
        arr, too_long = without_too_long(arr, line_no)  # a value past the line cap is rejected, as in a JSON log
        yield LineChunk(first_line=line_no, lines=arr, nbytes=nbytes, too_long=too_long)
        line_no += len(arr)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_LITELLM_ENDPOINTS = {
    "completion": "/v1/chat/completions",
    "acompletion": "/v1/chat/completions",
    "text_completion": "/v1/completions",
    "atext_completion": "/v1/completions",
    "embedding": "/v1/embeddings",
    "aembedding": "/v1/embeddings",
    "responses": "/v1/responses",
    "aresponses": "/v1/responses",
}


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in ("{", "["):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _int_or_none(v: Any) -> int | None:
    try:
        return int(float(v)) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def litellm_row_to_record(row: dict[str, Any]) -> dict[str, Any]:
    """One ``LiteLLM_SpendLogs`` row → a traffic-log record (validation happens later, in SQL).

    >>> rec = litellm_row_to_record({"request_id": "r", "startTime": "2026-01-01T00:00:00Z",
    ...     "api_key": "88dc28", "team_id": "t1", "call_type": "acompletion", "model": "m",
    ...     "messages": '[{"role": "user", "content": "hi"}]', "prompt_tokens": 3, "completion_tokens": 4})
    >>> rec["account_id"], rec["endpoint"], rec["response"]["usage"]["completion_tokens"]
    ('t1', '/v1/chat/completions', 4)
    """
    psr = _maybe_json(row.get("proxy_server_request"))
    messages = _maybe_json(row.get("messages"))
    request = psr if isinstance(psr, dict) and psr else {"model": row.get("model"), "messages": messages}
    response = _maybe_json(row.get("response"))
    if not isinstance(response, dict):
        response = {}
    usage = dict(response.get("usage") or {})
    for k in ("prompt_tokens", "completion_tokens"):
        if usage.get(k) is None and _int_or_none(row.get(k)) is not None:
            usage[k] = _int_or_none(row.get(k))
    if usage:
        response["usage"] = usage
    account = row.get("team_id") or row.get("user") or (f"key:{row['api_key']}" if row.get("api_key") else None)
    status = str(row.get("status") or "success").lower()
    latency = None
    try:
        from datetime import datetime

        t0 = datetime.fromisoformat(str(row.get("startTime")))
        t1 = datetime.fromisoformat(str(row.get("endTime")))
        latency = (t1 - t0).total_seconds() * 1000.0
    except (TypeError, ValueError):
        pass
    ts = row.get("startTime")
    if isinstance(ts, str) and " " in ts and "T" not in ts:
        ts = ts.replace(" ", "T", 1)
    return {
        "request_id": row.get("request_id"),
        "timestamp": ts,
        "account_id": account,
        "api_key_id": row.get("api_key") or None,
        "end_user": row.get("end_user") or None,
        "client_ip": row.get("requester_ip_address") or None,
        "endpoint": _LITELLM_ENDPOINTS.get(str(row.get("call_type") or ""), "/v1/chat/completions"),
        "request": request,
        "response": response if status != "failure" and response else None,
        "status_code": 500 if status == "failure" else 200,
        "latency_ms": latency,
    }


def litellm_line_chunks(path: Path, rejects: RejectWriter) -> Iterator[LineChunk]:
    """LiteLLM spend-log rows (JSON Lines or CSV) → traffic-log lines."""
    damage: list[BaseException] = []
    data = read_all_bytes(path, damage=damage)
    name = path.name.lower()
    lines: list[str | None] = []
    first = 1
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        reader = csv.DictReader(io.StringIO(data.decode("utf-8", errors="replace")))
        rows: Iterator[tuple[int, Any]] = ((i + 2, r) for i, r in enumerate(reader))
    else:
        rows = ((i + 1, raw) for i, raw in enumerate(data.split(b"\n")))
    for line_no, row in rows:
        if isinstance(row, bytes):
            if not row.strip():
                lines.append(None)
                continue
            try:
                row = orjson.loads(row)
            except orjson.JSONDecodeError:
                lines.append(row.decode("utf-8", errors="replace"))  # the normaliser rejects it
                continue
        if not isinstance(row, dict):
            lines.append(orjson.dumps(row).decode())
            continue
        lines.append(orjson.dumps(litellm_row_to_record(row)).decode())
        if len(lines) >= _BATCH_ROWS:
            yield _chunk(lines, first)
            first += len(lines)
            lines = []
    if lines:
        yield _chunk(lines, first)
        first += len(lines)
    if damage:  # the rows before it were yielded (the one cut short as it is)
        raise DamagedStream(path, first, damage[0]) from damage[0]


def find_batch_input(output_path: Path) -> Path | None:
    """The input file of a Batch API output file: ``X_output.jsonl`` → ``X_input.jsonl`` and similar."""
    name = output_path.name
    for a, b in (("output", "input"), ("results", "input"), ("out", "in")):
        if a in name:
            cand = output_path.with_name(name.replace(a, b))
            if cand.exists() and cand != output_path:
                return cand
    return None


def openai_batch_line_chunks(
    path: Path,
    rejects: RejectWriter,
    *,
    input_path: Path | None = None,
    account_id: str | None = None,
    timestamp: float | None = None,
) -> Iterator[LineChunk]:
    """Batch API output (+ input, joined on ``custom_id``) → traffic-log lines."""
    input_path = input_path or find_batch_input(path)
    if input_path is None:
        raise InputError(
            f"{path} looks like an OpenAI Batch API output file but its input file was not found; "
            "name it like the output with 'input' for 'output' (e.g. batch_input.jsonl)."
        )
    inputs: dict[str, dict] = {}
    for raw in read_all_bytes(input_path).split(b"\n"):
        if raw.strip():
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("custom_id"), str):
                inputs[rec["custom_id"]] = rec
    account = account_id or path.stem.split(".")[0]
    ts = timestamp if timestamp is not None else path.stat().st_mtime
    lines: list[str | None] = []
    damage: list[BaseException] = []
    for raw in read_all_bytes(path, damage=damage).split(b"\n"):
        if not raw.strip():
            lines.append(None)
            continue
        try:
            out = orjson.loads(raw)
        except orjson.JSONDecodeError:
            lines.append(raw.decode("utf-8", errors="replace"))
            continue
        if not isinstance(out, dict):
            lines.append(raw.decode("utf-8", errors="replace"))
            continue
        cid = out.get("custom_id")
        inp = inputs.get(cid) if isinstance(cid, str) else None
        resp = out.get("response") if isinstance(out.get("response"), dict) else {}
        body = resp.get("body") if isinstance(resp.get("body"), dict) else None
        rec = {
            "request_id": (resp.get("request_id") or out.get("id") or (f"{path.name}:{cid}" if cid else None)),
            "timestamp": (body or {}).get("created", ts),
            "account_id": account,
            "endpoint": (inp or {}).get("url") or "/v1/chat/completions",
            "request": (inp or {}).get("body") if inp else None,
            "response": body,
            "status_code": resp.get("status_code", 200 if body else 500),
            "batch_id": path.stem,
        }
        if inp is None:
            rec["request"] = None  # rejected by the normaliser: missing request
        lines.append(orjson.dumps(rec).decode())
    yield _chunk(lines, 1)
    if damage:
        raise DamagedStream(path, len(lines) + 1, damage[0]) from damage[0]


__all__ = [
    "find_batch_input",
    "litellm_line_chunks",
    "litellm_row_to_record",
    "openai_batch_line_chunks",
    "parquet_line_chunks",
]
