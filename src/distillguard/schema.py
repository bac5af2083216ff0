"""The canonical event schema: one row per API request, flattened from a traffic-log record.

A traffic-log record (``spec/contracts.md`` §1) is the raw request/response pair. Detection works on
the flat *event*: the fields every signal needs, typed, with the nested OpenAI body reduced to a few
columns (the last user prompt, the system prompt, sampling parameters, token counts).

There are two implementations of the record → event mapping, kept equal by a test:

- :func:`event_from_record` here, in Python, for one request at a time (gateway, online detector);
- the SQL in :mod:`distillguard.ingest.normalize`, vectorised in DuckDB, for logs.

Example:

>>> ev = event_from_record({"request_id": "r1", "timestamp": "2026-01-01T00:00:00Z",
...     "account_id": "acme", "endpoint": "/v1/chat/completions",
...     "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}})
>>> ev["prompt"], ev["ts"], ev["n"]
('hi', 1767225600.0, 1)
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from distillguard.errors import RecordRejected

REQUIRED_FIELDS = ("request_id", "timestamp", "account_id", "endpoint", "request")
OPTIONAL_STRING_FIELDS = ("api_key_id", "end_user", "client_ip", "user_agent", "batch_id")

#: The flat per-request event. Column order is the order of the SQL normaliser's SELECT.
#: ``account_id`` under which ``distillguard gateway`` logs requests refused for a missing or unknown
#: key. They are traffic (counted, kept in the log) but no account's: scan and replay leave them out.
UNAUTHENTICATED_ACCOUNT = "unauthenticated"

EVENT_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.float64()),  # Unix seconds, UTC
        ("account_id", pa.string()),
        ("api_key_id", pa.string()),
        ("end_user", pa.string()),
        ("client_ip", pa.string()),
        ("user_agent", pa.string()),
        ("endpoint", pa.string()),
        ("batch_id", pa.string()),
        ("status_code", pa.int32()),
        ("latency_ms", pa.float64()),
        ("model", pa.string()),
        ("n", pa.int32()),
        ("temperature", pa.float64()),
        ("top_p", pa.float64()),
        ("max_tokens", pa.int64()),
        ("logprobs", pa.bool_()),
        ("top_logprobs", pa.int32()),
        ("seed", pa.int64()),
        ("stream", pa.bool_()),
        ("reasoning_effort", pa.string()),
        ("has_tools", pa.bool_()),
        ("response_format", pa.string()),
        ("n_messages", pa.int32()),
        ("n_user_msgs", pa.int32()),
        ("n_assistant_msgs", pa.int32()),
        ("system_prompt", pa.string()),
        ("prompt", pa.string()),
        ("prompt_chars", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("reasoning_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("response_text", pa.string()),
    ]
)
EVENT_COLUMNS = tuple(EVENT_SCHEMA.names)

#: Optional account file (contracts.md §1), joined on ``account_id``.
ACCOUNT_SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("created_at", pa.float64()),
        ("payment_fingerprint", pa.string()),
        ("email_domain", pa.string()),
        ("country", pa.string()),
        ("tier", pa.string()),
        ("verified", pa.bool_()),
    ]
)

#: Where rejected input lines go, one JSON object per line.
REJECT_FIELDS = ("source", "line", "reason", "raw")
RAW_PREVIEW_CHARS = 2000


#: Unix seconds of the first and last instants of years 1-9999, the range of an RFC 3339 time: a
#: number outside it (or NaN, or infinity, which DuckDB's JSON parser reads) is no time.
TS_MIN, TS_MAX = -62135596800, 253402300799
TS_OUT_OF_RANGE = "field 'timestamp' is out of range (Unix seconds of a time in years 1-9999)"


def parse_timestamp(value: Any) -> float:
    """Unix seconds from an RFC 3339 string or a number; raises :class:`RecordRejected`.

    >>> parse_timestamp("2026-01-01T01:00:00+01:00")
    1767225600.0
    >>> parse_timestamp(1e300)
    Traceback (most recent call last):
    ...
    distillguard.errors.RecordRejected: field 'timestamp' is out of range (Unix seconds of a time in years 1-9999)
    """
    if isinstance(value, bool):
        raise RecordRejected("field 'timestamp' has wrong type: boolean")
    if isinstance(value, (int, float)):
        if not (TS_MIN <= value <= TS_MAX):  # also false for NaN
            raise RecordRejected(TS_OUT_OF_RANGE)
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise RecordRejected(f"field 'timestamp' is not RFC 3339: {value[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    raise RecordRejected(f"field 'timestamp' has wrong type: {_json_type(value)}")


def content_text(content: Any) -> str:
    """Text of an OpenAI message ``content``: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return ""


def _json_type(v: Any) -> str:
    """JSON type name of a parsed value (the words the SQL normaliser uses too)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def validate_record(record: Any) -> None:
    """Raise :class:`RecordRejected` unless ``record`` meets contracts.md §1."""
    if not isinstance(record, dict):
        raise RecordRejected(f"record is not a JSON object but {_json_type(record)}")
    for name in REQUIRED_FIELDS:
        if record.get(name) is None:
            raise RecordRejected(f"missing required field '{name}'")
    for name in ("request_id", "account_id", "endpoint"):
        if not isinstance(record[name], str):
            raise RecordRejected(f"field '{name}' has wrong type: {_json_type(record[name])}")
        if not record[name]:
            raise RecordRejected(f"field '{name}' is empty")
    parse_timestamp(record["timestamp"])
    if not isinstance(record["request"], dict):
        raise RecordRejected(f"field 'request' has wrong type: {_json_type(record['request'])}")
    for name in OPTIONAL_STRING_FIELDS:
        v = record.get(name)
        if v is not None and not isinstance(v, str):
            raise RecordRejected(f"field '{name}' has wrong type: {_json_type(v)}")
    sc = record.get("status_code")
    if sc is not None and _int(sc) is None:
        raise RecordRejected(f"field 'status_code' has wrong type: {_json_type(sc)}")
    lat = record.get("latency_ms")
    if lat is not None and _num(lat) is None:
        raise RecordRejected(f"field 'latency_ms' has wrong type: {_json_type(lat)}")
    resp = record.get("response")
    if resp is not None and not isinstance(resp, dict):
        raise RecordRejected(f"field 'response' has wrong type: {_json_type(resp)}")
    msgs = record["request"].get("messages")
    if msgs is not None and not isinstance(msgs, list):
        raise RecordRejected(f"field 'request.messages' has wrong type: {_json_type(msgs)}")


def _prompt_parts(req: dict) -> tuple[str, str | None, int, int, int, int]:
    """(last user prompt, system prompt, n_messages, n_user, n_assistant, total chars).

    Chat ``messages`` (or Responses-API ``input`` given as message objects) count message by message;
    otherwise the first of ``prompt`` / ``input`` that is a string or a non-empty list is the prompt.
    """
    instructions = _str(req.get("instructions"))
    msgs = req.get("messages")
    chat = isinstance(msgs, list)
    if not chat:
        inp = req.get("input")
        if isinstance(inp, list) and inp and isinstance(inp[0], dict):
            msgs = inp
    if isinstance(msgs, list):
        prompt, system, n_user, n_asst, chars = None, None, 0, 0, 0
        last_text = None
        for m in msgs:
            if not isinstance(m, dict):
                continue
            role = m.get("role")
            text = content_text(m.get("content"))
            chars += len(text)
            last_text = text
            if role == "user":
                n_user += 1
                prompt = text
            elif role == "assistant":
                n_asst += 1
            elif role in ("system", "developer") and system is None:
                system = text
        if not chat:
            system = instructions if instructions is not None else system
        prompt = prompt if prompt is not None else (last_text or "")
        return prompt, system, len(msgs), n_user, n_asst, chars
    for key in ("prompt", "input"):
        v = req.get(key)
        if isinstance(v, str):
            return v, instructions, 1, 1, 0, len(v)
        if isinstance(v, list) and v:
            text = v[0] if isinstance(v[0], str) else ""
            return text, instructions, 1, 1, 0, sum(len(x) for x in v if isinstance(x, str))
    return "", instructions, 0, 0, 0, 0


def _response_parts(resp: dict | None) -> tuple[int | None, int | None, int | None, str | None, str | None]:
    """(prompt_tokens, completion_tokens, reasoning_tokens, finish_reason, text)."""
    if not isinstance(resp, dict):
        return None, None, None, None, None
    usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
    pt = _int(usage.get("prompt_tokens"))
    if pt is None:
        pt = _int(usage.get("input_tokens"))
    ct = _int(usage.get("completion_tokens"))
    if ct is None:
        ct = _int(usage.get("output_tokens"))
    details = usage.get("completion_tokens_details")
    if not isinstance(details, dict):
        details = usage.get("output_tokens_details")
    rt = _int(details.get("reasoning_tokens")) if isinstance(details, dict) else None
    finish, text = None, None
    choices = resp.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        c0 = choices[0]
        finish = _str(c0.get("finish_reason"))
        msg = c0.get("message")
        if isinstance(msg, dict):
            text = content_text(msg.get("content"))
        elif isinstance(c0.get("text"), str):
            text = c0["text"]
    elif isinstance(resp.get("output_text"), str):
        text = resp["output_text"]
    return pt, ct, rt, finish, text


def event_from_record(record: Any) -> dict[str, Any]:
    """Flatten one traffic-log record into an event dict with :data:`EVENT_COLUMNS` keys."""
    validate_record(record)
    req = record["request"]
    prompt, system, n_msgs, n_user, n_asst, chars = _prompt_parts(req)
    pt, ct, rt, finish, text = _response_parts(record.get("response"))
    max_tokens = _int(req.get("max_tokens"))
    if max_tokens is None:
        max_tokens = _int(req.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = _int(req.get("max_output_tokens"))
    lp = req.get("logprobs")
    # chat: logprobs is a bool and top_logprobs an int; completions: logprobs is the int.
    logprobs = (lp is True) or (_int(lp) is not None and lp > 0)
    top_lp = _int(req.get("top_logprobs"))
    if top_lp is None:
        top_lp = _int(lp) or 0
    effort = _str(req.get("reasoning_effort"))
    if effort is None and isinstance(req.get("reasoning"), dict):
        effort = _str(req["reasoning"].get("effort"))
    rf = req.get("response_format")
    tools = req.get("tools")
    n = _int(req.get("n"))
    return {
        "request_id": record["request_id"],
        "ts": parse_timestamp(record["timestamp"]),
        "account_id": record["account_id"],
        "api_key_id": record.get("api_key_id"),
        "end_user": record.get("end_user") if record.get("end_user") is not None else _str(req.get("user")),
        "client_ip": record.get("client_ip"),
        "user_agent": record.get("user_agent"),
        "endpoint": record["endpoint"],
        "batch_id": record.get("batch_id"),
        "status_code": _int(record.get("status_code")) if record.get("status_code") is not None else 200,
        "latency_ms": _num(record.get("latency_ms")),
        "model": _str(req.get("model")),
        "n": n if n is not None else 1,
        "temperature": _num(req.get("temperature")),
        "top_p": _num(req.get("top_p")),
        "max_tokens": max_tokens,
        "logprobs": bool(logprobs),
        "top_logprobs": top_lp,
        "seed": _int(req.get("seed")),
        "stream": req.get("stream") is True,
        "reasoning_effort": effort,
        "has_tools": isinstance(tools, list) and len(tools) > 0,
        "response_format": _str(rf.get("type")) if isinstance(rf, dict) else None,
        "n_messages": n_msgs,
        "n_user_msgs": n_user,
        "n_assistant_msgs": n_asst,
        "system_prompt": system,
        "prompt": prompt,
        "prompt_chars": chars,
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "reasoning_tokens": rt,
        "finish_reason": finish,
        "response_text": text,
    }
