"""Per-request derived values: one definition in SQL (batch) and one in Python (online), kept equal.

Each request is reduced to a handful of typed values: token counts, flags for elicitation and
templating patterns found in the prompt, harvesting parameters, and 64-bit hashes of the prompt and
of its first and last 32 characters (template signatures). The patterns are written in the common
subset of RE2 (DuckDB) and Python ``re`` and run on the lower-cased prompt.

>>> d = derive_one({"prompt": "Please think step by step: what is 2+2?", "n_assistant_msgs": 0,
...                 "completion_tokens": 12, "n": 1, "logprobs": False, "finish_reason": "stop"})
>>> d["cot"], d["single"], d["out_tok"]
(True, True, 12)
"""

from __future__ import annotations

import hashlib
import re
import sys
from typing import Any

from distillguard.features.repeats import REPEAT_MIN_CHARS, REPEAT_SAMPLE, sampled_sql

#: Requests for reasoning traces / chain of thought, in several languages.
COT_PATTERN = (
    r"step[ -]by[ -]step|think (it )?through|show (your|all|the) (work|reasoning|steps)|explain (your|the|each) (reasoning|step)"
    r"|chain[ -]of[ -]thought|reason (carefully|step)|walk me through|let'?s think|<think>|internal (monologue|reasoning)"
    r"|hidden reasoning|thought process|reasoning process|before answering,? (think|reason)|full reasoning|detailed reasoning"
    r"|一步一步|逐步|思考过程|推理过程|详细推理|paso a paso|razonamiento|étape par étape|raisonnement|schritt für schritt"
    r"|denkprozess|шаг за шагом|рассужд|단계별|段階的|ステップバイステップ|passo a passo|raciocínio|adım adım"
)
#: Questions about the model's identity, maker, training or system prompt.
IDENTITY_PATTERN = (
    r"who (made|created|built|trained|developed|are) you|what (model|llm|ai model|language model) are you"
    r"|which (model|company|organization) (are you|made|trained|created)|your (system prompt|initial instructions|training data"
    r"|knowledge cutoff|architecture|model name)|(repeat|print|reveal|show) (the|your) (system prompt|instructions|text above)"
    r"|ignore (all )?(previous|prior|above) instructions|are you (gpt|chatgpt|claude|gemini|llama|qwen|deepseek)"
    r"|你是谁|谁(开发|训练|创造)了你|quién te (creó|entrenó)|qui t'a (créé|entraîné)|wer hat dich"
)
#: The self-instruct pattern: asking the model to write many new tasks or examples.
SELF_INSTRUCT_PATTERN = (
    r"come up with (a (set|list) of )?[0-9]+ |generate [0-9]+ (diverse |different |new |unique )?(task|instruction|question|example|prompt)"
    r"|list of [0-9]+ (diverse )?tasks|you are asked to (come up with|generate)|diverse task instructions"
    r"|(new|more) (instructions|tasks) (like|similar to)|[0-9]+ (diverse|different) (task )?instructions"
)
#: Fixed format scaffolding typical of dataset-building templates.
FORMAT_PATTERN = (
    r"### ?(instruction|input|response)|^instruction:|\ninput:|\noutput:|respond (only )?(in|with) (json|the following format)"
    r"|answer in the following format|output format:|format your (answer|response)|return (only )?(a )?(valid )?json"
)
TRANSLATE_PATTERN = r"translate (the following|this|it|into|to)"

PATTERNS = {
    "cot": COT_PATTERN,
    "ident": IDENTITY_PATTERN,
    "selfi": SELF_INSTRUCT_PATTERN,
    "fmt": FORMAT_PATTERN,
    "transl": TRANSLATE_PATTERN,
}
_COMPILED = {k: re.compile(v) for k, v in PATTERNS.items()}
#: Boolean values of one request on its own, in the order the stats count them.
DERIVED_FLAGS = ("cot", "ident", "selfi", "fmt", "transl", "single", "lp", "nmulti", "hitmax", "stream", "sys", "tools", "effort",
                 "rpt_n")

#: Characters of the prompt that every content feature reads (bounds the cost of huge prompts; the
#: batch path stores only this much of each prompt).
SCAN_CHARS = 2000
#: Characters of the prompt's head/tail that make its template signature.
SIG_CHARS = 32
#: A word for vocabulary breadth: a run of 3+ ASCII letters or digits (same in RE2 and Python).
WORD_PATTERN = r"[a-z0-9]{3,}"
_WORD_RE = re.compile(WORD_PATTERN)
WORDS_PROMPT_CHARS = 300


def _sql_quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def md5_u64(text: str) -> int:
    """Lower 64 bits of MD5 as DuckDB's ``md5_number_lower`` computes them."""
    return int.from_bytes(hashlib.md5(text.encode("utf-8")).digest()[8:], "little")


def md5_u64_sql(expr: str) -> str:
    """SQL of :func:`md5_u64` (DuckDB's ``md5_number_lower``): the upper 64 bits of ``md5_number``, which
    is the same value computed two to three times faster than ``md5_number_lower`` itself."""
    return f"(md5_number({expr}) >> 64)::UBIGINT"


def _signature(*values: Any) -> str:
    def f(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, bool):
            return "1" if v else "0"
        if isinstance(v, float):
            return repr(round(v, 3))
        return str(v)

    return "|".join(f(v) for v in values)


def param_signature(temperature: Any, top_p: Any, max_tokens: Any, n: Any, stream: Any, logprobs: Any) -> str:
    return _signature(temperature, top_p, max_tokens, n, stream, logprobs)


def fingerprint_signature(temperature: Any, top_p: Any, max_tokens: Any, n: Any, logprobs: Any) -> str:
    """:func:`param_signature` without ``stream``: the settings that make an account's request fingerprint."""
    return _signature(temperature, top_p, max_tokens, n, logprobs)


#: Characters of the system prompt that identify it in request fingerprints.
SYSTEM_PROMPT_CHARS = 64


def derive_one(ev: dict[str, Any]) -> dict[str, Any]:
    """Derived values of one event (a dict with :data:`~distillguard.schema.EVENT_COLUMNS` keys)."""
    prompt = (ev.get("prompt") or "")[:SCAN_CHARS]
    low = prompt.lower()
    out = {k: rx.search(low) is not None for k, rx in _COMPILED.items()}
    lp = bool(ev.get("logprobs"))
    n = ev.get("n") or 1
    effort = ev.get("reasoning_effort")
    out.update(
        out_tok=int(ev.get("completion_tokens") or 0),
        in_tok=int(ev.get("prompt_tokens") or 0),
        single=(ev.get("n_assistant_msgs") or 0) == 0,
        lp=lp,
        nmulti=n > 1,
        hitmax=ev.get("finish_reason") == "length",
        stream=bool(ev.get("stream")),
        sys=bool(ev.get("system_prompt")),
        tools=bool(ev.get("has_tools")),
        effort=(effort in ("medium", "high")) or (ev.get("reasoning_tokens") or 0) > 0,
        psig=param_signature(ev.get("temperature"), ev.get("top_p"), ev.get("max_tokens"), n, bool(ev.get("stream")), lp),
        fsig=fingerprint_signature(ev.get("temperature"), ev.get("top_p"), ev.get("max_tokens"), n, lp),
        sph=md5_u64((ev.get("system_prompt") or "")[:SYSTEM_PROMPT_CHARS].lower()),
        temp=ev.get("temperature"),
        ph=md5_u64(prompt),
        pre=md5_u64(prompt[:SIG_CHARS].lower()),
        suf=md5_u64(prompt[-SIG_CHARS:].lower()),
        # set by the release tracker, which sees the traffic before this request (features.pivot)
        post=False,
        newm=False,
        rpt=False,  # set by the repeat tracker (features.repeats)
        end_user=ev.get("end_user"),
    )
    out["rpt_n"] = out["ph"] % REPEAT_SAMPLE == 0 and len(prompt) >= REPEAT_MIN_CHARS
    return out


def words_of(prompt: str | None) -> list[str]:
    """Words used for the vocabulary-breadth feature (ASCII letters and digits, 3+ characters), interned:
    the online detector keeps the words of each account's first prompts, one copy of a word for all."""
    return list(map(sys.intern, _WORD_RE.findall((prompt or "")[:WORDS_PROMPT_CHARS].lower())))


def _signature_sql(*, with_stream: bool) -> str:
    """SQL twin of :func:`_signature` over the parameter columns of an event."""
    parts = [
        "CASE WHEN temperature IS NULL THEN '-' ELSE CAST(round(temperature, 3) AS VARCHAR) END",
        "CASE WHEN top_p IS NULL THEN '-' ELSE CAST(round(top_p, 3) AS VARCHAR) END",
        "CASE WHEN max_tokens IS NULL THEN '-' ELSE CAST(max_tokens AS VARCHAR) END",
        "CAST(coalesce(n, 1) AS VARCHAR)",
    ]
    if with_stream:
        parts.append("CASE WHEN coalesce(stream, false) THEN '1' ELSE '0' END")
    parts.append("CASE WHEN coalesce(logprobs, false) THEN '1' ELSE '0' END")
    return f"concat_ws('|', {', '.join(parts)})"


def psig_sql() -> str:
    """SQL of :func:`param_signature` over event columns."""
    return _signature_sql(with_stream=True)


def fsig_sql() -> str:
    """SQL of :func:`fingerprint_signature` over event columns."""
    return _signature_sql(with_stream=False)


def sph_sql() -> str:
    """SQL of the system-prompt hash of :func:`derive_one`."""
    return md5_u64_sql(f"lower(left(coalesce(system_prompt, ''), {SYSTEM_PROMPT_CHARS}))")


def derive_sql(source: str = "events") -> str:
    """SQL selecting the derived values of every event of ``source`` (the twin of :func:`derive_one`)."""
    low = f"lower(left(coalesce(prompt, ''), {SCAN_CHARS}))"
    # One pass of the union of the patterns first: most prompts match none, and CASE only runs the
    # single patterns on the rows that matched it (twice as fast as five passes over every prompt).
    any_pattern = "|".join(f"(?:{p})" for p in PATTERNS.values())
    flags = ",\n  ".join(
        f"CASE WHEN _any THEN regexp_matches(_low, {_sql_quote(p)}) ELSE false END AS {k}"
        for k, p in PATTERNS.items()
    )

    return f"""
SELECT request_id, ts, account_id, api_key_id, client_ip, user_agent, end_user, model, prompt,
  {flags},
  coalesce(completion_tokens, 0) AS out_tok,
  coalesce(prompt_tokens, 0) AS in_tok,
  coalesce(n_assistant_msgs, 0) = 0 AS single,
  coalesce(logprobs, false) AS lp,
  coalesce(n, 1) > 1 AS nmulti,
  coalesce(finish_reason = 'length', false) AS hitmax,
  coalesce(stream, false) AS stream,
  coalesce(system_prompt, '') <> '' AS sys,
  coalesce(has_tools, false) AS tools,
  (coalesce(reasoning_effort IN ('medium', 'high'), false) OR coalesce(reasoning_tokens, 0) > 0) AS effort,
  {psig_sql()} AS psig,
  {fsig_sql()} AS fsig,
  {sph_sql()} AS sph,
  temperature AS temp,
  {md5_u64_sql(f"left(coalesce(prompt, ''), {SCAN_CHARS})")} AS ph,
  {md5_u64_sql(f"lower(left(coalesce(prompt, ''), {SIG_CHARS}))")} AS pre,
  {md5_u64_sql(f"lower(right(left(coalesce(prompt, ''), {SCAN_CHARS}), {SIG_CHARS}))")} AS suf,
  {sampled_sql("ph", f"left(coalesce(prompt, ''), {SCAN_CHARS})")} AS rpt_n
FROM (SELECT *, {low} AS _low, regexp_matches({low}, {_sql_quote(any_pattern)}) AS _any FROM {source})
"""
