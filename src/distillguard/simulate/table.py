"""Columnar request table the generators fill, and the renderer that turns rows into traffic-log records.

Generators add whole columns at once (numpy arrays, or object arrays for texts and message lists);
the writer sorts all rows by time and renders them, in chunks, into contract §1 records:
OpenAI ``chat/completions`` (or ``completions``) request bodies with the assembled response body
and ``usage``. Rendering is the only per-row Python loop and is kept flat.
"""

from __future__ import annotations

import math

import numpy as np

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"

#: column -> (dtype, default). Object columns take a sequence of length n or a scalar str/None.
COLUMNS: dict[str, tuple[object, object]] = {
    "ts": (np.float64, None),
    "acct": (np.int32, None),
    "model": (object, None),
    "endpoint": (object, CHAT),
    "messages": (object, None),  # list of chat messages, or the completions prompt (str or list)
    "temperature": (np.float64, np.nan),
    "top_p": (np.float64, np.nan),
    "max_tokens": (np.int64, -1),
    "n": (np.int32, -1),
    "logprobs": (np.bool_, False),
    "top_logprobs": (np.int32, -1),
    "stream": (np.bool_, False),
    "seed": (np.int64, -1),
    "effort": (object, None),
    "tools": (object, None),
    "rformat": (object, None),
    "stop": (object, None),
    "extra": (object, None),  # dict merged into the request body
    "end_user": (object, None),
    "ip": (object, None),
    "ua": (object, None),
    "batch_id": (object, None),
    "answer": (object, ""),  # str, list of str (one per choice), or an assistant message dict
    "ptok": (np.int64, 0),
    "ctok": (np.int64, 0),
    "rtok": (np.int64, 0),
    "status": (np.int32, 200),
}


def rep(value, n: int) -> np.ndarray:
    """An object array holding ``value`` n times (for list/dict values that must not broadcast)."""
    a = np.empty(n, dtype=object)
    for i in range(n):
        a[i] = value
    return a


class Table:
    """Append-only columnar table of simulated requests.

    >>> t = Table(); t.add(2, ts=[1.0, 2.0], acct=[0, 1], model="m", ip="1.2.3.4", ua="x",
    ...                    messages=rep([{"role": "user", "content": "hi"}], 2))
    >>> t.finish()["model"].tolist()
    ['m', 'm']
    """

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
        self.n = 0

    def add(self, n: int, /, **cols) -> None:
        if n == 0:
            return
        unknown = set(cols) - set(COLUMNS)
        if unknown:
            raise KeyError(f"unknown columns {sorted(unknown)}")
        for name, (dtype, default) in COLUMNS.items():
            v = cols.get(name, default)
            if v is None and default is None and name in ("ts", "acct", "model", "messages", "ip", "ua"):
                raise ValueError(f"column {name} is required")
            if dtype is object:
                if isinstance(v, (list, np.ndarray)):
                    arr = np.empty(n, dtype=object)
                    arr[:] = list(v) if isinstance(v, list) else v
                else:
                    arr = np.full(n, v, dtype=object)
            else:
                arr = np.asarray(v, dtype=dtype)
                if arr.ndim == 0:
                    arr = np.full(n, arr, dtype=dtype)
            if len(arr) != n:
                raise ValueError(f"column {name} has {len(arr)} values, expected {n}")
            self.parts[name].append(arr)
        self.n += n

    def finish(self) -> dict[str, np.ndarray]:
        return {c: (np.concatenate(p) if p else np.zeros(0, dtype=COLUMNS[c][0])) for c, p in self.parts.items()}


_ALT = ("s", "e", "a", "t", "n", "r", "l", "i", "o", "d", "c", "u", "m", "p", "h", "g", "y", "b", "f", "k")


def _logprobs_block(text: str, k: int, salt: int) -> dict:
    """A short ``logprobs.content`` for the first 8 words (real responses carry one entry per token)."""
    content = []
    for j, w in enumerate(text.split()[:8] or [""]):
        lp = -round(0.05 + ((salt * 7919 + j * 104729) % 1000) / 400.0, 4)
        stem = w[:-1] or w
        tops = [{"token": w, "logprob": lp}]
        tops += [{"token": stem + _ALT[i], "logprob": round(lp - 1.1 - 0.7 * i, 4)} for i in range(k - 1)]
        content.append({"token": w, "logprob": lp, "top_logprobs": tops})
    return {"content": content}


def render_rows(cols: dict[str, np.ndarray], idx: np.ndarray, req_ids: list[str], ts_str: list[str],
                account_ids: list[str], key_ids: list[str], latency: list[float]) -> list[dict]:
    """Traffic-log records for the rows ``idx`` (already in output order)."""
    g = {c: cols[c][idx].tolist() for c in cols}
    created = (cols["ts"][idx]).astype(np.int64).tolist()
    isnan = math.isnan
    out = []
    append = out.append
    for (j, model, endpoint, msgs, t, tp, mt, n, lp, tlp, stream, sd, effort, tools, rformat, stop, extra, eu, ip,
         ua, bid, ans, pt, ct, rt, status) in zip(
            range(len(idx)), g["model"], g["endpoint"], g["messages"], g["temperature"], g["top_p"], g["max_tokens"],
            g["n"], g["logprobs"], g["top_logprobs"], g["stream"], g["seed"], g["effort"], g["tools"], g["rformat"],
            g["stop"], g["extra"], g["end_user"], g["ip"], g["ua"], g["batch_id"], g["answer"], g["ptok"], g["ctok"],
            g["rtok"], g["status"]):
        completions = endpoint == COMPLETIONS
        req: dict = {"model": model, ("prompt" if completions else "messages"): msgs}
        if not isnan(t):
            req["temperature"] = t
        if not isnan(tp):
            req["top_p"] = tp
        if mt > 0:
            req["max_tokens"] = mt
        if n > 0:
            req["n"] = n
        if lp:
            if completions:
                req["logprobs"] = max(tlp, 1)
            else:
                req["logprobs"] = True
                if tlp > 0:
                    req["top_logprobs"] = tlp
        if stream:
            req["stream"] = True
            req["stream_options"] = {"include_usage": True}
        if sd >= 0:
            req["seed"] = sd
        if effort is not None:
            req["reasoning_effort"] = effort
        if tools is not None:
            req["tools"] = tools
        if rformat is not None:
            req["response_format"] = {"type": rformat}
        if stop is not None:
            req["stop"] = stop
        if eu is not None:
            req["user"] = eu
        if extra:
            req.update(extra)
        rid = req_ids[j]
        rec = {"request_id": rid, "timestamp": ts_str[j], "account_id": account_ids[j], "api_key_id": key_ids[j],
               "client_ip": ip, "user_agent": ua, "endpoint": endpoint, "request": req}
        if eu is not None:
            rec["end_user"] = eu
        if bid is not None:
            rec["batch_id"] = bid
        rec["status_code"] = status
        rec["latency_ms"] = latency[j]
        if status == 200:
            texts = ans if ans.__class__ is list else None
            nchoice = len(texts) if texts is not None else (n if n > 1 else 1)
            finish = "length" if (mt > 0 and ct >= mt) else "stop"
            choices = []
            for c in range(nchoice):
                text = texts[c] if texts is not None else ans
                if completions:
                    ch = {"index": c, "text": text, "logprobs": {"tokens": text.split()[:8]} if lp else None,
                          "finish_reason": finish}
                elif text.__class__ is dict:
                    ch = {"index": c, "message": text,
                          "finish_reason": "tool_calls" if text.get("tool_calls") else finish}
                else:
                    ch = {"index": c, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    if lp:
                        ch["logprobs"] = _logprobs_block(text, tlp if tlp > 0 else 1, c + j)
                choices.append(ch)
            cts = ct * nchoice
            rec["response"] = {
                "id": ("cmpl-" if completions else "chatcmpl-") + rid[4:],
                "object": "text_completion" if completions else "chat.completion",
                "created": created[j],
                "model": model,
                "choices": choices,
                "usage": {"prompt_tokens": pt, "completion_tokens": cts, "total_tokens": pt + cts,
                          "completion_tokens_details": {"reasoning_tokens": rt * nchoice}},
            }
        append(rec)
    return out
