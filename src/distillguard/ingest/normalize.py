"""Vectorised record → event normalisation in DuckDB SQL (the batch twin of ``schema.event_from_record``).

Input: a relation ``lines(line_no BIGINT, line VARCHAR)``. Output: one row per line with either a
``reason`` (the line is rejected) or the columns of :data:`distillguard.schema.EVENT_SCHEMA`.
No Python runs per line. Two paths give the same rows:

- the fast path (:func:`fast_normalize_sql`) parses each line once, with one ``json_transform``, and
  takes the lines whose shape that parse is sure of (nearly all well-formed requests);
- the slow path (:func:`normalize_sql`, :func:`slow_normalize_sql`) parses the top level, the request
  and the messages in turn; it handles every shape and words every rejection, and takes the rest.

``tests/ingest/test_ingest.py`` checks that this SQL and the Python normaliser give the same events on
every example; ``tests/ingest/test_normalize_fast.py`` that the two paths agree.
"""

from __future__ import annotations

from distillguard.schema import EVENT_COLUMNS, TS_MAX, TS_MIN, TS_OUT_OF_RANGE

_TOP = [
    "request_id", "timestamp", "account_id", "api_key_id", "end_user", "client_ip", "user_agent",
    "endpoint", "batch_id", "status_code", "latency_ms", "request", "response",
]  # fmt: skip
_REQ = [
    "model", "messages", "prompt", "input", "instructions", "n", "temperature", "top_p", "max_tokens",
    "max_completion_tokens", "max_output_tokens", "logprobs", "top_logprobs", "seed", "stream",
    "reasoning_effort", "reasoning", "response_format", "tools", "user",
]  # fmt: skip


#: The reason of a line that does not parse (the reader tells a log cut short by it; see reader.py).
NOT_JSON = "line is not valid JSON"


def _paths(names: list[str]) -> str:
    return "[" + ", ".join(f"'$.\"{n}\"'" for n in names) + "]"


def _int(x: str) -> str:
    """A JSON value as BIGINT when it is a JSON integer, else NULL (bools and floats are not ints)."""
    return f"(CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT') THEN TRY_CAST({x}::VARCHAR AS BIGINT) END)"


def _num(x: str) -> str:
    return f"(CASE WHEN json_type({x}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN TRY_CAST({x}::VARCHAR AS DOUBLE) END)"


def _str(x: str, *, w: bool = False) -> str:
    return f"(CASE WHEN {_is(x, 'VARCHAR', w=w)} THEN ({x})->>'$' END)"


#: The first character of compact JSON text that tells its type.
_FIRST = {"VARCHAR": '"', "OBJECT": "{", "ARRAY": "["}


def _is(x: str, t: str, *, w: bool = False) -> str:
    """``x`` is JSON of type ``t``. ``w``: ``x`` is compact JSON text as ``json_transform`` and
    ``json_extract`` write it, whose first character tells a string, an object or an array without
    parsing it again."""
    if w and t in _FIRST:
        return f"starts_with({x}::VARCHAR, '{_FIRST[t]}')"
    return f"(json_type({x}) = '{t}')"


def _missing(x: str, *, w: bool = False) -> str:
    """``x`` is absent or JSON null. ``w``: ``x`` is a leaf as ``json_transform`` writes it, NULL for both."""
    return f"({x} IS NULL)" if w else f"({x} IS NULL OR json_type({x}) = 'NULL')"


def _text(c: str, *, written: bool = False) -> str:
    """Text of a message ``content``: a string, or the string ``text`` of each part of a list, joined by newlines.

    ``written``: ``c`` is a value as ``json_transform`` writes a JSON leaf (NULL for JSON null, else
    compact JSON text), whose type its first character tells, without parsing it again.
    """
    parts = (
        f"coalesce(array_to_string(list_transform(list_filter(json_transform({c}, '[{{\"text\": \"JSON\"}}]'), "
        f"lambda p: json_type(p.text) = 'VARCHAR'), lambda p: p.text->>'$'), chr(10)), '')"
    )
    if written:
        return f"(CASE WHEN {_is(c, 'VARCHAR', w=True)} THEN ({c})->>'$' WHEN {_is(c, 'ARRAY', w=True)} THEN {parts} ELSE '' END)"
    return f"(CASE json_type({c}) WHEN 'VARCHAR' THEN ({c})->>'$' WHEN 'ARRAY' THEN {parts} ELSE '' END)"


def _tname(x: str) -> str:
    """JSON type name as the Python normaliser words it (string, integer, number, boolean, array, object, null)."""
    return (
        f"(CASE json_type({x}) WHEN 'VARCHAR' THEN 'string' WHEN 'BIGINT' THEN 'integer' WHEN 'UBIGINT' THEN 'integer' "
        f"WHEN 'DOUBLE' THEN 'number' ELSE lower(json_type({x})) END)"
    )


def _wrong_type(name: str, x: str) -> str:
    return f"'field ''{name}'' has wrong type: ' || {_tname(x)}"


def _reason_sql(fast: bool = False, refs: dict[str, str] | None = None) -> str:
    """CASE expression giving the first reason a record is invalid, in the order of ``schema.validate_record``.

    ``fast``: for rows of the fast path, which only takes JSON objects whose ``request`` is an object
    with a ``messages`` array or none, and whose ``response`` is absent or an object (see
    ``_FAST_ELIGIBLE``); the checks those guarantee are left out. ``refs`` maps field names to SQL
    (default: the slow path's ``t[i]``, see :data:`SLOW_REFS`).
    """
    t = refs or SLOW_REFS
    w = fast  # the fast path's fields are leaves as json_transform writes them
    any_missing = " OR ".join(f"{t[n]} IS NULL" for n in ("request_id", "timestamp", "account_id", "endpoint", "request"))
    checks = []
    if not fast:
        checks.append(("t IS NULL", f"'{NOT_JSON}'"))
        # only rows that miss a required field pay for a second parse to tell "not an object" apart
        checks.append((f"({any_missing}) AND json_type(line) <> 'OBJECT'", "'record is not a JSON object but ' || " + _tname("line")))
    for name in ["request_id", "timestamp", "account_id", "endpoint"] + ([] if fast else ["request"]):
        checks.append((_missing(t[name], w=w), f"'missing required field ''{name}'''"))
    for name in ["request_id", "account_id", "endpoint"]:
        x = t[name]
        checks.append((f"NOT {_is(x, 'VARCHAR', w=w)}", _wrong_type(name, x)))
        checks.append((f"({x}->>'$') = ''", f"'field ''{name}'' is empty'"))
    ts = t['timestamp']
    checks.append((f"json_type({ts}) NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT', 'DOUBLE')", _wrong_type("timestamp", ts)))
    checks.append(("ts IS NULL", f"'field ''timestamp'' is not RFC 3339: ' || left({ts}->>'$', 40)"))
    checks.append((f"NOT isfinite(ts) OR ts < {TS_MIN} OR ts > {TS_MAX}", f"'{TS_OUT_OF_RANGE.replace(chr(39), chr(39) * 2)}'"))
    req = t['request']
    if not fast:
        checks.append((f"NOT {_is(req, 'OBJECT')}", _wrong_type("request", req)))
    for name in ["api_key_id", "end_user", "client_ip", "user_agent", "batch_id"]:
        x = t[name]
        checks.append((f"NOT {_missing(x, w=w)} AND NOT {_is(x, 'VARCHAR', w=w)}", _wrong_type(name, x)))
    sc = t['status_code']
    checks.append((f"NOT {_missing(sc, w=w)} AND json_type({sc}) NOT IN ('BIGINT', 'UBIGINT')", _wrong_type("status_code", sc)))
    lat = t['latency_ms']
    checks.append((f"NOT {_missing(lat, w=w)} AND json_type({lat}) NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE')", _wrong_type("latency_ms", lat)))
    if not fast:
        resp = t['response']
        checks.append((f"NOT {_missing(resp)} AND NOT {_is(resp, 'OBJECT')}", _wrong_type("response", resp)))
        checks.append(("NOT msgs_ok", _wrong_type("request.messages", f"json_extract({req}, '$.messages')")))
    return "CASE " + " ".join(f"WHEN {c} THEN {r}" for c, r in checks) + " END"


#: Where the slow path finds each field: top-level fields in list ``t``, ``request.<name>`` in list ``r``,
#: the response's usage and text in list ``u`` (``u1`` .. ``u11``, see ``_slow_ctes``).
SLOW_REFS = {
    **{n: f"t[{i + 1}]" for i, n in enumerate(_TOP)},
    **{f"request.{n}": f"r[{i + 1}]" for i, n in enumerate(_REQ)},
    **{f"u{k}": f"u[{k}]" for k in range(1, 12)},
}
T = {n: SLOW_REFS[n] for n in _TOP}
R = {n: SLOW_REFS[f"request.{n}"] for n in _REQ}


def _ts(x: str) -> str:
    """Unix seconds of a JSON ``timestamp``: an RFC 3339 string or a number; NULL otherwise."""
    return (
        f"CASE WHEN json_type({x}) = 'VARCHAR' THEN epoch(TRY_CAST(trim({x}->>'$') AS TIMESTAMPTZ)) "
        f"WHEN json_type({x}) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN TRY_CAST({x}::VARCHAR AS DOUBLE) END"
    )


_TS = _ts(T["timestamp"])


def _slow_ctes(source: str) -> str:
    """The CTEs ``b`` .. ``e`` of the slow path over ``source(line_no, line)``; ``e`` has the columns
    :func:`_select` reads."""
    usage = f"json_extract({T['response']}, ['$.usage.prompt_tokens', '$.usage.input_tokens', '$.usage.completion_tokens', '$.usage.output_tokens', '$.usage.completion_tokens_details.reasoning_tokens', '$.usage.output_tokens_details.reasoning_tokens', '$.choices[0].finish_reason', '$.choices[0].message.content', '$.choices[0].text', '$.output_text', '$.choices[0]'])"
    # Messages: chat `messages`, or Responses-API `input` given as a list of message objects.
    msgs_json = (
        f"CASE WHEN {_is(R['messages'], 'ARRAY')} THEN {R['messages']} "
        f"WHEN {_missing(R['messages'])} AND {_is(R['input'], 'ARRAY')} AND json_type({R['input']}, '$[0]') = 'OBJECT' THEN {R['input']} END"
    )
    return f"""b AS (
  -- one parse of the whole line; NULL when it is not valid JSON
  SELECT line_no, line, CASE WHEN line IS NOT NULL THEN try(json_extract(line, {_paths(_TOP)})) END AS t
  FROM {source}
), c AS (
  SELECT *,
         CASE WHEN json_type(t[{_TOP.index('request') + 1}]) = 'OBJECT' THEN json_extract(t[{_TOP.index('request') + 1}], {_paths(_REQ)}) END AS r,
         {_TS} AS ts
  FROM b
), d AS (
  SELECT *,
         ({_missing(R['messages'])} OR {_is(R['messages'], 'ARRAY')}) AS msgs_ok,
         list_transform(json_transform({msgs_json}, '[{{"role": "JSON", "content": "JSON"}}]'),
            lambda m: {{'role': CASE WHEN json_type(m.role) = 'VARCHAR' THEN m.role->>'$' END,
                       'text': {_text("m.content")}}}) AS ms,
         CASE WHEN json_type(t[{_TOP.index('response') + 1}]) = 'OBJECT' THEN {usage} END AS u,
         {_sp(SLOW_REFS)} AS sp
  FROM c
), e AS (
  SELECT *,
         ms AS mo,
         list_filter(ms, lambda m: m.role = 'user') AS mu
  FROM d
)"""


def normalize_sql(source: str = "lines", *, with_text: bool = True) -> str:
    """SQL selecting ``line_no, line, reason, <event columns>`` from relation ``source`` (every row)."""
    return f"""
WITH {_slow_ctes(source)}

{_select(fast=False, with_text=with_text)}"""


def _select(*, fast: bool, with_text: bool, frm: str = "e", refs: dict[str, str] | None = None) -> str:
    """The final SELECT over CTE ``frm`` (columns ts, ms, mo, mu, sp, line unless ``fast``, and those
    ``refs`` names: by default the slow path's t, r, u)."""
    refs = refs or SLOW_REFS
    T = {n: refs[n] for n in _TOP}
    R = {n: refs[f"request.{n}"] for n in _REQ}
    u = {k: refs[f"u{k}"] for k in range(1, 12)}
    w = fast  # the fast path's fields are leaves as json_transform writes them
    effort = f"coalesce({_str(R['reasoning_effort'], w=w)}, CASE WHEN {_is(R['reasoning'], 'OBJECT', w=w)} THEN {_str('json_extract(' + R['reasoning'] + ', ' + chr(39) + '$.effort' + chr(39) + ')')} END)"
    response_text = (
        f"""CASE WHEN json_type({u[11]}) = 'OBJECT' AND json_type({u[11]}, '$.message') = 'OBJECT' THEN {_text(u[8])}
            WHEN json_type({u[11]}) = 'OBJECT' THEN {_str(u[9], w=w)}
            WHEN {u[11]} IS NULL THEN {_str(u[10], w=w)} END"""
        if with_text else "NULL::VARCHAR"
    )
    return f"""
SELECT line_no,
       {'' if fast else 'line,'}
       {_reason_sql(fast, refs)} AS reason,
       {T['request_id']}->>'$' AS request_id,
       ts,
       {T['account_id']}->>'$' AS account_id,
       {_str(T['api_key_id'], w=w)} AS api_key_id,
       coalesce({_str(T['end_user'], w=w)}, {_str(R['user'], w=w)}) AS end_user,
       {_str(T['client_ip'], w=w)} AS client_ip,
       {_str(T['user_agent'], w=w)} AS user_agent,
       {T['endpoint']}->>'$' AS endpoint,
       {_str(T['batch_id'], w=w)} AS batch_id,
       coalesce({_int(T['status_code'])}, 200)::INTEGER AS status_code,
       {_num(T['latency_ms'])} AS latency_ms,
       {_str(R['model'], w=w)} AS model,
       coalesce({_int(R['n'])}, 1)::INTEGER AS n,
       {_num(R['temperature'])} AS temperature,
       {_num(R['top_p'])} AS top_p,
       coalesce({_int(R['max_tokens'])}, {_int(R['max_completion_tokens'])}, {_int(R['max_output_tokens'])}) AS max_tokens,
       coalesce(CASE json_type({R['logprobs']}) WHEN 'BOOLEAN' THEN ({R['logprobs']}->>'$') = 'true'
                WHEN 'BIGINT' THEN {_int(R['logprobs'])} > 0 WHEN 'UBIGINT' THEN true END, false) AS logprobs,
       coalesce({_int(R['top_logprobs'])}, nullif({_int(R['logprobs'])}, 0), 0)::INTEGER AS top_logprobs,
       {_int(R['seed'])} AS seed,
       coalesce(json_type({R['stream']}) = 'BOOLEAN' AND ({R['stream']}->>'$') = 'true', false) AS stream,
       {effort} AS reasoning_effort,
       coalesce(json_type({R['tools']}) = 'ARRAY' AND json_array_length({R['tools']}) > 0, false) AS has_tools,
       CASE WHEN {_is(R['response_format'], 'OBJECT', w=w)} THEN {_str("json_extract(" + R['response_format'] + ", '$.type')", w=w)} END AS response_format,
       CASE WHEN ms IS NOT NULL THEN len(ms) WHEN sp IS NOT NULL THEN 1 ELSE 0 END::INTEGER AS n_messages,
       CASE WHEN ms IS NOT NULL THEN len(mu) WHEN sp IS NOT NULL THEN 1 ELSE 0 END::INTEGER AS n_user_msgs,
       CASE WHEN ms IS NOT NULL THEN len(list_filter(ms, lambda m: m.role = 'assistant')) ELSE 0 END::INTEGER AS n_assistant_msgs,
       CASE WHEN {_is(R['messages'], 'ARRAY', w=w)} THEN list_filter(mo, lambda m: m.role IN ('system', 'developer'))[1].text
            WHEN ms IS NOT NULL THEN coalesce({_str(R['instructions'], w=w)}, list_filter(mo, lambda m: m.role IN ('system', 'developer'))[1].text)
            ELSE {_str(R['instructions'], w=w)} END AS system_prompt,
       CASE WHEN ms IS NOT NULL THEN coalesce(mu[-1].text, mo[-1].text, '')
            WHEN json_type(sp) = 'VARCHAR' THEN sp->>'$'
            WHEN json_type(sp) = 'ARRAY' THEN coalesce({_str("json_extract(sp, '$[0]')", w=w)}, '')
            ELSE '' END AS prompt,
       CASE WHEN ms IS NOT NULL THEN coalesce(list_sum(list_transform(mo, lambda m: length(m.text))), 0)
            WHEN json_type(sp) = 'VARCHAR' THEN length(sp->>'$')
            WHEN json_type(sp) = 'ARRAY' THEN coalesce(list_sum(list_transform(json_extract(sp, '$[*]'),
                 lambda x: CASE WHEN json_type(x) = 'VARCHAR' THEN length(x->>'$') ELSE 0 END)), 0)
            ELSE 0 END::BIGINT AS prompt_chars,
       coalesce({_int(u[1])}, {_int(u[2])}) AS prompt_tokens,
       coalesce({_int(u[3])}, {_int(u[4])}) AS completion_tokens,
       coalesce({_int(u[5])}, {_int(u[6])}) AS reasoning_tokens,
       {_str(u[7], w=w)} AS finish_reason,
       {response_text} AS response_text
FROM {frm}
"""


def _json_struct() -> str:
    """The ``json_transform`` structure of the fast path: every leaf JSON (so types are checked exactly
    as on the slow path) except the nesting of ``request``, its ``messages`` and ``response``."""
    import json

    req = {n: "JSON" for n in _REQ}
    req["messages"] = [{"role": "JSON", "content": "JSON"}]
    top: dict = {n: "JSON" for n in _TOP}
    top["request"] = req
    top["response"] = {
        "usage": {
            "prompt_tokens": "JSON", "input_tokens": "JSON", "completion_tokens": "JSON", "output_tokens": "JSON",
            "completion_tokens_details": {"reasoning_tokens": "JSON"}, "output_tokens_details": {"reasoning_tokens": "JSON"},
        },
        "choices": [{"finish_reason": "JSON"}],
        "output_text": "JSON",
    }  # fmt: skip
    return json.dumps(top, separators=(",", ":"))


#: Which lines the fast path takes. ``json_transform`` does not fail on a value of another type than
#: the structure says: it gives NULL (or a struct of NULLs), so the fast path only takes the lines whose
#: shape it can be sure of: a JSON object whose ``request`` has a ``messages`` array (only an object's
#: array reads as a list), or whose ``request`` is an object without ``messages`` (told by ``jt``, the
#: JSON types of ``request`` and ``request.messages``, read from the line only for the lines without a
#: ``messages`` list) and whose ``input`` is not a list of messages; and whose ``response`` is absent
#: or an object with ``usage``, ``choices`` or ``output_text`` (a struct of NULLs is not told apart
#: from an object without those).
_FAST_ELIGIBLE = (
    "s IS NOT NULL"
    " AND (s.request.messages IS NOT NULL OR (jt[1] = 'OBJECT' AND coalesce(jt[2], 'NULL') = 'NULL'"
    " AND NOT coalesce(json_type(s.request.input) = 'ARRAY' AND json_type(s.request.input, '$[0]') = 'OBJECT', false)))"
    " AND (s.response IS NULL OR s.response.usage IS NOT NULL OR s.response.choices IS NOT NULL OR s.response.output_text IS NOT NULL)"
)

#: Where the fast path finds each field: straight in the parsed struct ``s``. ``request`` and ``response``
#: are not read (the eligibility test stands for their checks); ``messages`` only has to read as an
#: array when it is one.
FAST_REFS = {
    **{n: f"s.{n}" for n in _TOP if n not in ("request", "response")},
    "request": "NULL::JSON", "response": "NULL::JSON",
    **{f"request.{n}": f"s.request.{n}" for n in _REQ if n != "messages"},
    "request.messages": "CASE WHEN s.request.messages IS NOT NULL THEN '[]'::JSON END",
    "u1": "s.response.usage.prompt_tokens", "u2": "s.response.usage.input_tokens",
    "u3": "s.response.usage.completion_tokens", "u4": "s.response.usage.output_tokens",
    "u5": "s.response.usage.completion_tokens_details.reasoning_tokens",
    "u6": "s.response.usage.output_tokens_details.reasoning_tokens",
    "u7": "s.response.choices[1].finish_reason",
    **{f"u{k}": "NULL::JSON" for k in range(8, 12)},
}  # fmt: skip


def _sp(refs: dict[str, str], *, w: bool = False) -> str:
    """The prompt of a request without messages: ``prompt``, else ``input``, when a string or a non-empty list."""
    p, i = refs["request.prompt"], refs["request.input"]
    return (
        f"CASE WHEN {_is(p, 'VARCHAR', w=w)} OR ({_is(p, 'ARRAY', w=w)} AND json_array_length({p}) > 0) THEN {p} "
        f"WHEN {_is(i, 'VARCHAR', w=w)} OR ({_is(i, 'ARRAY', w=w)} AND json_array_length({i}) > 0) THEN {i} END"
    )


_SQL_TYPES = {"string": "VARCHAR", "double": "DOUBLE", "int32": "INTEGER", "int64": "BIGINT", "bool": "BOOLEAN"}


def _typed(prompt_max_chars: int | None) -> str:
    """The event columns cast to :data:`EVENT_SCHEMA`'s types, ``prompt`` cut to ``prompt_max_chars`` characters."""
    from distillguard.schema import EVENT_SCHEMA

    return ", ".join(
        (f"left(prompt, {int(prompt_max_chars)})" if f.name == "prompt" and prompt_max_chars is not None else f.name)
        + f"::{_SQL_TYPES[str(f.type)]} AS {f.name}"
        for f in EVENT_SCHEMA
    )


def fast_normalize_sql(source: str = "lines", *, prompt_max_chars: int | None = None, with_text: bool = False) -> str:
    """SQL for the fast path: one ``json_transform`` parse per line instead of one parse per nesting level.

    Selects ``line_no, fast, reason, <event columns>`` (typed as :data:`EVENT_SCHEMA`, ``prompt`` cut
    to ``prompt_max_chars`` characters) for every non-NULL line of ``source``, in order. Rows with
    ``fast`` false (not valid JSON, not an object, a ``messages`` that is not a list, a ``response``
    that is not an object, ...: see ``_FAST_ELIGIBLE``) have NULL columns and must go through
    :func:`slow_normalize_sql`, which handles every shape and words every rejection. Rows with ``fast``
    true give exactly what it gives them (``tests/ingest/test_normalize_fast.py`` checks this on every
    example and on random mutations). ``response_text`` is NULL unless ``with_text``: scans do not keep
    it, and it costs a second parse of each line (``json_extract`` of the first choice and
    ``output_text``, the values the slow path reads it from), still far fewer than the slow path's.
    """
    refs = FAST_REFS
    text_col, line_col = "", ""
    if with_text:
        refs = {**FAST_REFS, **{f"u{k}": f"rt[{k - 7}]" for k in range(8, 12)}}
        line_col = ", line"
        text_col = (", CASE WHEN fast THEN json_extract(line, ['$.response.choices[0].message.content', "
                    "'$.response.choices[0].text', '$.response.output_text', '$.response.choices[0]']) END AS rt")
    return f"""
WITH a0 AS (
  SELECT line_no, line, try(json_transform(line, '{_json_struct()}')) AS s FROM {source} WHERE line IS NOT NULL
), a AS (
  -- for the lines without a messages list: is `request` an object, is `messages` absent? (a second parse, of those only)
  SELECT line_no, s, CASE WHEN s IS NOT NULL AND s.request.messages IS NULL THEN json_type(line, ['$.request', '$.request.messages']) END AS jt{line_col}
  FROM a0
), b AS (
  SELECT line_no, coalesce({_FAST_ELIGIBLE}, false) AS fast, s{line_col} FROM a
), fc AS (
  SELECT line_no, fast, CASE WHEN fast THEN s END AS s{text_col} FROM b
), fd AS (
  SELECT line_no, fast, s, {_ts(FAST_REFS['timestamp'])} AS ts, {_sp(FAST_REFS, w=True)} AS sp,
         list_transform(s.request.messages, lambda m: {{'role': {_str('m.role', w=True)},
                                                        'text': {_text("m.content", written=True)}}}) AS ms{', rt' if with_text else ''}
  FROM fc
), fe AS (
  SELECT *, ms AS mo, list_filter(ms, lambda m: m.role = 'user') AS mu FROM fd
), f AS (
  {_select(fast=True, with_text=with_text, frm="fe", refs=refs).replace("SELECT line_no,", "SELECT line_no, fast,", 1)}
)
SELECT line_no, fast, reason, {_typed(prompt_max_chars)} FROM f"""


def slow_normalize_sql(source: str = "lines", *, with_text: bool = True, prompt_max_chars: int | None = None) -> str:
    """:func:`normalize_sql` for every non-NULL line of ``source``: ``line_no, reason, <event columns>``
    typed as :data:`EVENT_SCHEMA`, ``prompt`` cut to ``prompt_max_chars`` characters."""
    return f"""
WITH sl AS (
  SELECT line_no, line FROM {source} WHERE line IS NOT NULL
), {_slow_ctes("sl")}, g AS (
  {_select(fast=False, with_text=with_text)}
)
SELECT line_no, reason, {_typed(prompt_max_chars)} FROM g"""


EVENT_SELECT = ", ".join(EVENT_COLUMNS)
