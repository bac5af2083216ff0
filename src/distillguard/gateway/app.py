"""The enforcing OpenAI-compatible proxy (ASGI, Starlette), contracts.md §4.

Per request: authenticate the key (hashed) → read the body (size limit) → admit against quotas and
current flags (one atomic step in the state backend) → apply the policy (refuse, or change the body)
→ forward to the upstream (pooled ``aiohttp`` client, no retries) → answer the client (streams
passed through chunk by chunk) → after the answer: queue the traffic-log record, count tokens, run the
online detector on the event and store a changed verdict as a flag for the next requests.

Example (in-process, against the fake upstream):

>>> import asyncio, httpx, tempfile
>>> from distillguard.gateway.fakeupstream import FakeUpstream
>>> from distillguard.gateway.keys import KeyStore
>>> up = FakeUpstream().start()
>>> ks = KeyStore(); _ = ks.add(api_key="sk-1", account_id="acme")
>>> gw = Gateway(upstream=up.url, keys=ks, log_dir=tempfile.mkdtemp())
>>> async def call():
...     async with gw.lifespan_context():
...         async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app), base_url="http://gw") as c:
...             r = await c.post("/v1/chat/completions", json={"model": "m", "messages": []},
...                              headers={"Authorization": "Bearer sk-1"})
...             return r.status_code
>>> asyncio.run(call())
200
>>> up.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from distillguard.errors import ConfigError, RecordRejected, StateBackendError
from distillguard.gateway.keys import KeyInfo, KeyStore
from distillguard.gateway.logsink import LogSink
from distillguard.gateway.metrics import Metrics
from distillguard.gateway.policy import Policy, Rule, parse_policy_text
from distillguard.gateway.state import Admission, MemoryState, RedisState
from distillguard.schema import event_from_record

__all__ = ["Gateway", "load_accounts", "load_detector", "payment_clusters"]

POST_ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings")
_POST_SET = frozenset(POST_ENDPOINTS)
UNAUTHENTICATED = "unauthenticated"
_JSON = "application/json"


def _err(status: int, message: str, type_: str, code: str, headers: dict | None = None) -> Response:
    body = orjson.dumps({"error": {"message": message, "type": type_, "code": code, "param": None}})
    return Response(body, status_code=status, media_type=_JSON, headers=headers)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def load_accounts(path: str | Path | None) -> dict[str, dict]:
    """Read the optional account file (contracts §1) into ``{account_id: row}``."""
    if not path:
        return {}
    out: dict[str, dict] = {}
    p = Path(path)
    try:
        lines = p.read_bytes().splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read accounts file {p}: {e.strerror}") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ConfigError(f"{p}:{no}: not JSON; the accounts file is JSON Lines with account_id") from None
        if isinstance(row, dict) and isinstance(row.get("account_id"), str):
            out[row["account_id"]] = row
    return out


def payment_clusters(accounts: dict[str, dict]) -> dict[str, str]:
    """``{account_id: cluster_id}`` for accounts sharing a payment fingerprint with another one.

    >>> payment_clusters({"a": {"payment_fingerprint": "x"}, "b": {"payment_fingerprint": "x"},
    ...                   "c": {"payment_fingerprint": "y"}})
    {'a': 'pay-2d711642b726', 'b': 'pay-2d711642b726'}
    """
    by_fp: dict[str, list[str]] = {}
    for aid, row in accounts.items():
        fp = row.get("payment_fingerprint")
        if isinstance(fp, str) and fp:
            by_fp.setdefault(fp, []).append(aid)
    out = {}
    for fp, aids in by_fp.items():
        if len(aids) > 1:
            cid = "pay-" + hashlib.sha256(fp.encode()).hexdigest()[:12]
            for a in aids:
                out[a] = cid
    return out


def load_detector(spec: str | None, accounts: dict[str, dict]) -> Any:
    """``"package.module:Factory"`` → ``Factory(accounts=accounts)`` (default: the online detector)."""
    if not spec:
        from distillguard.detect.online import OnlineDetector

        return OnlineDetector(accounts=accounts)
    mod, _, name = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"cannot load detector {spec!r} ({e}); give it as package.module:Class") from None
    return factory(accounts=accounts)


class _ReqCtx:
    """What one request carries from arrival to its log record."""

    __slots__ = ("t0", "ts", "request_id", "endpoint", "key", "client_ip", "user_agent", "body", "cluster_id", "clusters",
                 "action", "score", "flagged", "upstream_ms", "allowlisted")

    def __init__(self, t0: float, ts: float, request_id: str, endpoint: str):
        self.t0, self.ts, self.request_id, self.endpoint = t0, ts, request_id, endpoint
        self.key: KeyInfo | None = None
        self.client_ip: str | None = None
        self.user_agent: str | None = None
        self.body: Any = None
        self.cluster_id: str | None = None
        self.clusters: tuple[str, ...] = ()
        self.action: str | None = None
        self.score = 0.0
        self.flagged = False
        self.upstream_ms: float | None = None
        self.allowlisted = False


class _StreamAssembler:
    """Rebuilds the complete response body from server-sent events, fed chunk by chunk."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.buf = b""
        self.meta: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: dict | None = None
        self.final: dict | None = None  # Responses API: response.completed carries the whole body

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while True:
            i = self.buf.find(b"\n\n")
            if i < 0:
                return
            event, self.buf = self.buf[:i], self.buf[i + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, data: bytes) -> None:
        if not data or data == b"[DONE]":
            return
        try:
            ev = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(ev, dict):
            return
        if isinstance(ev.get("response"), dict) and str(ev.get("type", "")).startswith("response."):
            self.final = ev["response"]
            return
        for k in ("id", "created", "model", "system_fingerprint"):
            if k in ev and k not in self.meta:
                self.meta[k] = ev[k]
        if isinstance(ev.get("usage"), dict):
            self.usage = ev["usage"]
        for ch in ev.get("choices") or ():
            if not isinstance(ch, dict):
                continue
            c = self.choices.setdefault(int(ch.get("index", 0) or 0), {"text": [], "role": None, "finish_reason": None})
            delta = ch.get("delta")
            if isinstance(delta, dict):
                if delta.get("role"):
                    c["role"] = delta["role"]
                if isinstance(delta.get("content"), str):
                    c["text"].append(delta["content"])
                if delta.get("tool_calls"):
                    c.setdefault("tool_calls", []).extend(delta["tool_calls"])
            elif isinstance(ch.get("text"), str):
                c["text"].append(ch["text"])
            if ch.get("finish_reason"):
                c["finish_reason"] = ch["finish_reason"]

    def body(self) -> dict:
        if self.final is not None:
            return self.final
        chat = self.endpoint == "/v1/chat/completions"
        choices = []
        for idx in sorted(self.choices):
            c = self.choices[idx]
            text = "".join(c["text"])
            if chat:
                msg: dict[str, Any] = {"role": c["role"] or "assistant", "content": text}
                if c.get("tool_calls"):
                    msg["tool_calls"] = c["tool_calls"]
                choices.append({"index": idx, "message": msg, "finish_reason": c["finish_reason"]})
            else:
                choices.append({"index": idx, "text": text, "finish_reason": c["finish_reason"]})
        out = dict(self.meta, object="chat.completion" if chat else "text_completion", choices=choices)
        if self.usage is not None:
            out["usage"] = self.usage
        return out


class Gateway:
    """The proxy: ``Gateway(...).app`` is the ASGI application."""

    def __init__(self, *, upstream: str, keys: KeyStore, log_dir: str | Path, policy: Policy | None = None,
                 state: MemoryState | RedisState | None = None, detector: Any = None,
                 accounts: dict[str, dict] | None = None, admin_token: str | None = None,
                 upstream_api_key: str | None = None, flush_interval_s: float = 0.2,
                 log_max_bytes: int = 256 << 20, log_max_age_s: float = 3600.0, trust_forwarded_for: bool = False,
                 max_connections: int = 512):
        self.upstream = upstream.rstrip("/")
        if self.upstream.endswith("/v1"):
            self.upstream = self.upstream[:-3]
        self.keys = keys
        self.policy = policy or Policy()
        self.state = state if state is not None else MemoryState()
        self.accounts = accounts or {}
        self.cluster_hints = payment_clusters(self.accounts)
        if detector is None:
            from distillguard.detect.online import OnlineDetector

            detector = OnlineDetector(accounts=self.accounts)
        self.detector = detector
        self.admin_token = admin_token or None
        self.upstream_api_key = upstream_api_key
        self.trust_forwarded_for = trust_forwarded_for
        self.max_connections = max_connections
        self.sink = LogSink(log_dir=log_dir, flush_interval_s=flush_interval_s, max_bytes=log_max_bytes,
                            max_age_s=log_max_age_s)
        self.metrics = Metrics()
        self.metrics.gauges["log_queue_depth"] = lambda: float(self.sink.pending)
        self.metrics.gauges["log_records_written"] = lambda: float(self.sink.written)
        self.metrics.gauges["log_write_errors"] = lambda: float(self.sink.errors)
        self.client: aiohttp.ClientSession | None = None
        self._verdicts: dict[str, tuple[bool, float, str | None]] = {}
        # the detector runs on one worker thread (it is not thread-safe; one thread keeps its order),
        # fed through a deque, so a slow detector never stalls the event loop that serves requests
        self._det = _DetectorWorker(self)
        self._store_tasks: set[asyncio.Task] = set()
        self.key_sync_interval_s = 1.0
        self._seq = 0
        self._prefix = os.urandom(4).hex()
        self._need_tokens = False
        self._refresh_policy_flags()
        routes = [Route(p, self.proxy, methods=["POST"]) for p in POST_ENDPOINTS]
        routes += [
            Route("/v1/models", self.proxy, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/metrics", self.metrics_endpoint, methods=["GET"]),
            Route("/admin/keys", self.admin_keys, methods=["GET", "POST"]),
            Route("/admin/keys/{api_key_id}", self.admin_revoke, methods=["DELETE"]),
            Route("/admin/policy", self.admin_policy, methods=["GET", "PUT"]),
            Route("/admin/flags", self.admin_flags, methods=["GET", "POST"]),
        ]
        self.starlette = Starlette(routes=routes, lifespan=self._lifespan)
        self.app = self._asgi

    async def _asgi(self, scope: dict, receive: Any, send: Any) -> None:
        """The hot path (the proxied endpoints) skips Starlette's middleware stack and router."""
        if scope["type"] == "http" and (scope["method"] == "POST" and scope["path"] in _POST_SET
                                        or scope["method"] == "GET" and scope["path"] == "/v1/models"):
            response = await self.proxy(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.starlette(scope, receive, send)

    # lifecycle -------------------------------------------------------------------------------

    def _refresh_policy_flags(self) -> None:
        self._limits = self.policy.quota("key").as_list() + self.policy.quota("account").as_list() + \
            self.policy.quota("cluster").as_list()
        self._need_tokens = any(self._limits[i] for i in (2, 3, 6, 7, 10, 11))

    @contextlib.asynccontextmanager
    async def lifespan_context(self):
        if self.sink._thread is None:
            self.sink.start()
        self._det.start(asyncio.get_running_loop())
        sync = asyncio.ensure_future(self._sync_keys()) if self.state.backend == "redis" else None
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections, ttl_dns_cache=300, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=self.policy.upstream_timeout_s),
            auto_decompress=True, skip_auto_headers=("User-Agent",),
        )
        try:
            yield
        finally:
            if sync is not None:
                sync.cancel()
            await self.drain()
            self._det.stop()
            await self.client.close()
            self.sink.close()
            await self.state.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette):
        async with self.lifespan_context():
            yield

    async def _sync_keys(self) -> None:
        """With Redis: pick up keys created and revoked through any gateway's admin API (every second)."""
        while True:
            try:
                created, revoked = await self.state.key_events()
                for h, info in created.items():
                    self.keys.add_hashed(key_hash=h, account_id=info["account_id"], api_key_id=info["api_key_id"])
                for kid in revoked:
                    self.keys.revoke(kid)
            except StateBackendError:
                self.metrics.inc("state_errors_total", fail_mode=self.policy.fail_mode)
            await asyncio.sleep(self.key_sync_interval_s)

    # helpers -----------------------------------------------------------------------------------

    def _new_id(self) -> str:
        self._seq += 1
        return f"dg-{self._prefix}-{self._seq:x}"

    def _record(self, ctx: _ReqCtx, status: int, response: dict | None, **extra: Any) -> dict:
        key = ctx.key
        req = ctx.body
        if not isinstance(req, dict):
            req = {"_unparsed": req} if req is not None else {}
        rec: dict[str, Any] = {
            "request_id": ctx.request_id,
            "timestamp": _rfc3339(ctx.ts),
            "account_id": key.account_id if key else UNAUTHENTICATED,
            "endpoint": ctx.endpoint,
            "request": req,
            "status_code": status,
            "latency_ms": round((time.perf_counter() - ctx.t0) * 1000, 3),
        }
        if key:
            rec["api_key_id"] = key.api_key_id
        user = req.get("user")
        if isinstance(user, str):
            rec["end_user"] = user
        if ctx.client_ip:
            rec["client_ip"] = ctx.client_ip
        if ctx.user_agent:
            rec["user_agent"] = ctx.user_agent
        if response is not None:
            rec["response"] = response
        gw: dict[str, Any] = {}
        if ctx.action:
            gw["action"] = ctx.action
            gw["enforced"] = self.policy.mode == "enforce"
        if ctx.flagged or ctx.score:
            gw["score"] = ctx.score
            gw["flagged"] = ctx.flagged
        if ctx.cluster_id:
            gw["cluster_id"] = ctx.cluster_id
        if ctx.upstream_ms is not None:
            gw["upstream_ms"] = round(ctx.upstream_ms, 3)
        gw.update(extra)
        if gw:
            rec["distillguard"] = gw
        return rec

    def _refuse(self, ctx: _ReqCtx, resp: Response, reason: str) -> Response:
        self.metrics.inc("refused_total", reason=reason)
        body = orjson.loads(resp.body)
        resp.background = BackgroundTask(self._after, ctx, resp.status_code, None, body.get("error"))
        return resp

    # the proxy ----------------------------------------------------------------------------------

    async def proxy(self, request: Request) -> Response:
        t0 = time.perf_counter()
        ctx = _ReqCtx(t0, time.time(), self._new_id(), request.url.path)
        headers = request.headers
        ctx.user_agent = headers.get("user-agent")
        if self.trust_forwarded_for and headers.get("x-forwarded-for"):
            ctx.client_ip = headers["x-forwarded-for"].split(",")[0].strip()[:64]
        elif request.client:
            ctx.client_ip = request.client.host
        # body (bounded) first, so that even refused requests are logged with what they sent
        if request.method == "POST":
            limit = self.policy.max_body_bytes
            clen = headers.get("content-length")
            if clen is not None and (not clen.isdigit() or int(clen) > limit):
                ctx.body = {"_not_read": f"content-length {clen[:20]} over the {limit}-byte limit"}
                return self._refuse(ctx, _err(413, f"request body over the {limit}-byte limit; send a smaller request",
                                              "invalid_request_error", "request_too_large"), "body_too_large")
            chunks, size = [], 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    ctx.body = {"_not_read": f"body over the {limit}-byte limit"}
                    return self._refuse(ctx, _err(413, f"request body over the {limit}-byte limit; send a smaller "
                                                       "request", "invalid_request_error", "request_too_large"),
                                        "body_too_large")
                chunks.append(chunk)
            raw = b"".join(chunks)
            try:
                ctx.body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                ctx.body = raw[:2000].decode("utf-8", "replace")
                self._auth(ctx, headers)
                return self._refuse(ctx, _err(400, "request body is not valid JSON; send a JSON object",
                                              "invalid_request_error", "invalid_json"), "invalid_json")
            if not isinstance(ctx.body, dict):
                self._auth(ctx, headers)
                return self._refuse(ctx, _err(400, "request body must be a JSON object", "invalid_request_error",
                                              "invalid_json"), "invalid_json")
        else:
            ctx.body = {}
        status = self._auth(ctx, headers)
        if status is not None:
            return self._refuse(ctx, _err(401, status, "invalid_request_error", "invalid_api_key"), "auth")
        key = ctx.key
        assert key is not None
        ctx.allowlisted = self.policy.allowlisted(key.account_id, key.api_key_id)
        rule: Rule | None = None
        if not ctx.allowlisted:
            try:
                adm = await self.state.admit(key.api_key_id, key.account_id, self.cluster_hints.get(key.account_id, ""),
                                             self._limits, now=ctx.ts)
            except StateBackendError:
                self.metrics.inc("state_errors_total", fail_mode=self.policy.fail_mode)
                if self.policy.fail_mode == "closed":
                    return self._refuse(ctx, _err(503, "the gateway's shared state is unavailable; retry later",
                                                  "server_error", "state_unavailable", {"Retry-After": "5"}),
                                        "state_unavailable")
                hint = self.cluster_hints.get(key.account_id)
                adm = Admission(True, cluster_id=hint, clusters=(hint,) if hint else ())
            ctx.cluster_id, ctx.clusters = adm.cluster_id, adm.clusters
            for f in (adm.account_flag, adm.cluster_flag):
                if f:
                    ctx.score = max(ctx.score, float(f.get("score", 0.0)))
                    ctx.flagged = ctx.flagged or bool(f.get("flagged"))
            if not adm.ok:
                ctx.action = "quota"
                resp = _err(429, f"{adm.scope} quota {adm.limit} exhausted; retry after {adm.retry_after_s} s",
                            "rate_limit_exceeded", "quota_exceeded", {"Retry-After": str(adm.retry_after_s)})
                if self.policy.mode == "enforce":
                    return self._refuse(ctx, resp, f"quota_{adm.scope}")
            rule = self.policy.match(score=ctx.score, flagged=ctx.flagged)
        body = ctx.body
        forward = body
        if rule is not None:
            ctx.action = rule.action
            if self.policy.mode == "enforce":
                if rule.action == "block":
                    return self._refuse(ctx, _err(403, "this account is blocked for suspected model extraction; "
                                                  "contact support", "permission_denied", "blocked"), "block")
                if rule.action == "throttle":
                    return self._refuse(ctx, _err(429, f"this account is throttled; retry after {rule.retry_after_s} s",
                                                  "rate_limit_exceeded", "throttled",
                                                  {"Retry-After": str(rule.retry_after_s)}), "throttle")
                forward = self._degrade(body, rule)
                self.metrics.inc("modified_total", action=rule.action)
        strip = self.policy.strip_request_fields
        if strip and any(f in forward for f in strip):
            forward = {k: v for k, v in forward.items() if k not in strip}
        return await self._forward(ctx, request, forward)

    def _auth(self, ctx: _ReqCtx, headers: Any) -> str | None:
        auth = headers.get("authorization")
        if not auth or not auth[:7].lower() == "bearer ":
            return "missing API key; send 'Authorization: Bearer <key>'"
        info = self.keys.lookup(auth[7:].strip())
        if info is None:
            return "invalid API key; check the key you were given"
        if info.revoked:
            ctx.key = info
            return "this API key was revoked; ask for a new key"
        ctx.key = info
        return None

    @staticmethod
    def _degrade(body: dict, rule: Rule) -> dict:
        out = dict(body)
        if rule.action == "strip_logprobs" or rule.strip_logprobs:
            out.pop("logprobs", None)
            out.pop("top_logprobs", None)
        if rule.action == "cap" or rule.max_n is not None or rule.max_tokens is not None:
            if rule.max_n is not None and isinstance(out.get("n"), int) and out["n"] > rule.max_n:
                out["n"] = rule.max_n
            if rule.max_tokens is not None:
                for k in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
                    if k in out and (not isinstance(out[k], int) or out[k] > rule.max_tokens):
                        out[k] = rule.max_tokens
                if not any(k in out for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")):
                    out["max_output_tokens" if "input" in out and "messages" not in out else "max_tokens"] = rule.max_tokens
        return out

    async def _forward(self, ctx: _ReqCtx, request: Request, forward: dict) -> Response:
        assert self.client is not None
        up_headers = {"content-type": _JSON, "accept": request.headers.get("accept", "*/*"),
                      "x-request-id": ctx.request_id}
        if self.upstream_api_key:
            up_headers["authorization"] = "Bearer " + self.upstream_api_key
        method = request.method
        content = orjson.dumps(forward) if method == "POST" else None
        stream = method == "POST" and forward.get("stream") is True
        t_up = time.perf_counter()
        try:
            resp = await self.client.request(method, self.upstream + ctx.endpoint, data=content, headers=up_headers,
                                             allow_redirects=False)
            if not (stream and resp.status == 200):
                try:
                    raw = await resp.read()
                finally:
                    resp.release()
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            self.metrics.inc("upstream_errors_total", kind="timeout")
            return self._refuse(ctx, _err(504, "the upstream model server timed out; retry later", "server_error",
                                          "upstream_timeout"), "upstream_timeout")
        except (aiohttp.ClientError, OSError):
            self.metrics.inc("upstream_errors_total", kind="connection")
            return self._refuse(ctx, _err(502, "the upstream model server is unreachable; retry later",
                                          "server_error", "upstream_unavailable"), "upstream_unavailable")
        if stream and resp.status == 200:
            return _SSEResponse(self, ctx, resp)
        ctx.upstream_ms = (time.perf_counter() - t_up) * 1000
        if resp.status >= 400:
            return self._upstream_error(ctx, resp.status, raw, resp.headers)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        out = Response(raw, status_code=resp.status, media_type=resp.headers.get("content-type", _JSON),
                       headers={"x-request-id": ctx.request_id})
        out.background = BackgroundTask(self._after, ctx, resp.status, parsed if isinstance(parsed, dict) else None)
        return out

    def _upstream_error(self, ctx: _ReqCtx, s: int, raw: bytes, up_headers: Any) -> Response:
        self.metrics.inc("upstream_errors_total", kind=str(s))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        headers = {"x-request-id": ctx.request_id}
        if "retry-after" in up_headers:
            headers["Retry-After"] = up_headers["retry-after"][:32]
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            e = body["error"]
            out = _err(s, str(e.get("message", f"upstream error {s}"))[:2000], str(e.get("type", "upstream_error"))[:100],
                       str(e.get("code", f"upstream_{s}"))[:100], headers)
        else:
            out = _err(s, f"the upstream model server answered HTTP {s}", "upstream_error", f"upstream_{s}", headers)
        out.background = BackgroundTask(self._after, ctx, s, None, orjson.loads(out.body)["error"])
        return out

    async def _after(self, ctx: _ReqCtx, status: int, response: dict | None, error: dict | None = None,
                     **extra: Any) -> None:
        """After the answer is sent: log, count tokens, detect."""
        if error is not None:
            extra["error"] = error
        rec = self._record(ctx, status, response, **extra)
        self.sink.put(rec)
        self.metrics.inc("requests_total", endpoint=ctx.endpoint, status=str(status))
        self.metrics.observe_latency(rec["latency_ms"])
        key = ctx.key
        if key is None or key.revoked:
            return
        if self._need_tokens and isinstance(response, dict) and isinstance(response.get("usage"), dict):
            u = response["usage"]
            tokens = u.get("total_tokens")
            if not isinstance(tokens, int):
                tokens = sum(v for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
                             if isinstance(v := u.get(k), int))
            try:
                await self.state.add_tokens(key.api_key_id, key.account_id, ctx.clusters, tokens, now=ctx.ts)
            except StateBackendError:
                self.metrics.inc("state_errors_total", fail_mode=self.policy.fail_mode)
        try:
            event = event_from_record(rec)
        except RecordRejected:
            return
        if self._det.thread is not None and self._det.thread.is_alive():
            self._det.put(key.account_id, event)
        else:  # no worker (stopped): detect inline
            await self._store_verdict(key.account_id, self.detector.process(event))

    async def drain(self) -> None:
        """Wait until every queued detection has run and its verdict is stored (tests, shutdown)."""
        while True:
            if self._det.busy():
                await asyncio.sleep(0.001)
                continue
            await asyncio.sleep(0)  # run the hand-backs the worker scheduled before it went idle
            if self._store_tasks:
                await asyncio.gather(*list(self._store_tasks), return_exceptions=True)
                continue
            if not self._det.busy():
                return

    def _schedule_store(self, account_id: str, verdict: Any, flag: dict, newly: bool) -> None:
        task = asyncio.ensure_future(self._write_flag(account_id, verdict.cluster_id, flag, newly))
        self._store_tasks.add(task)
        task.add_done_callback(self._store_tasks.discard)

    def _verdict_change(self, account_id: str, verdict: Any) -> tuple[dict, bool] | None:
        """The flag to store when the verdict changed enough (and whether it is a new flag), else None."""
        flagged, score, cid = bool(verdict.flagged), float(verdict.score), verdict.cluster_id
        prev = self._verdicts.get(account_id)
        if prev is not None and prev[0] == flagged and prev[2] == cid and abs(prev[1] - score) < 0.05:
            return None
        self._verdicts[account_id] = (flagged, score, cid)
        if prev is None and not flagged and score < 0.05 and cid is None:
            return None
        flag = {"score": score, "flagged": flagged, "cluster_id": cid, "at": time.time(),
                "reasons": list(verdict.reasons or [])[:5]}
        return flag, flagged and not (prev and prev[0])

    async def _store_verdict(self, account_id: str, verdict: Any) -> None:
        change = self._verdict_change(account_id, verdict)
        if change is not None:
            await self._write_flag(account_id, verdict.cluster_id, *change)

    async def _write_flag(self, account_id: str, cid: str | None, flag: dict, newly: bool) -> None:
        flagged = flag["flagged"]
        if newly:
            self.metrics.inc("detector_flags_total")
        try:
            await self.state.set_flag("a", account_id, flag)
            if cid:
                await self.state.set_account_cluster(account_id, cid)
                if flagged:
                    await self.state.set_flag("c", cid, dict(flag, source_account=account_id))
        except StateBackendError:
            self.metrics.inc("state_errors_total", fail_mode=self.policy.fail_mode)

    # plain endpoints ---------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        alive = self.sink._thread is not None and self.sink._thread.is_alive()
        state_ok = await self.state.ping()
        ok = alive and (state_ok or self.policy.fail_mode == "open")
        body = {"status": "ok" if ok else "unavailable", "log_writer": alive, "state": self.state.backend,
                "state_ok": state_ok}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type=_JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    # admin API ---------------------------------------------------------------------------------

    def _admin_denied(self, request: Request) -> Response | None:
        if not self.admin_token:
            return _err(403, "the admin API is disabled; set DISTILLGUARD_ADMIN_TOKEN to enable it",
                        "permission_denied", "admin_disabled")
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return _err(401, "missing or wrong admin token", "invalid_request_error", "invalid_admin_token")
        return None

    async def _admin_json(self, request: Request) -> dict | Response:
        raw = await request.body()
        if len(raw) > self.policy.max_body_bytes:
            return _err(413, "admin request too large", "invalid_request_error", "request_too_large")
        try:
            data = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError:
            return _err(400, "admin request body is not valid JSON", "invalid_request_error", "invalid_json")
        if not isinstance(data, dict):
            return _err(400, "admin request body must be a JSON object", "invalid_request_error", "invalid_json")
        return data

    async def admin_keys(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if request.method == "GET":
            return Response(orjson.dumps({"keys": self.keys.list()}), media_type=_JSON)
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        aid = data.get("account_id")
        if not isinstance(aid, str) or not aid:
            return _err(400, "give 'account_id' (and optionally 'api_key_id')", "invalid_request_error", "missing_field")
        kid = data.get("api_key_id") if isinstance(data.get("api_key_id"), str) else None
        key, info = self.keys.create(account_id=aid, api_key_id=kid)
        try:
            from distillguard.gateway.keys import hash_key

            await self.state.publish_key(hash_key(key), aid, info.api_key_id)
        except StateBackendError as e:
            return _err(503, f"key created on this gateway only: {e}", "server_error", "state_unavailable")
        return Response(orjson.dumps({"api_key": key, "api_key_id": info.api_key_id, "account_id": aid}),
                        status_code=201, media_type=_JSON)

    async def admin_revoke(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        kid = request.path_params["api_key_id"]
        n = self.keys.revoke(kid)
        if not n:
            return _err(404, "no such api_key_id", "invalid_request_error", "not_found")
        try:
            await self.state.publish_revoke(kid)
        except StateBackendError as e:
            return _err(503, f"revoked on this gateway only: {e}", "server_error", "state_unavailable")
        return Response(orjson.dumps({"revoked": n}), media_type=_JSON)

    async def admin_policy(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if request.method == "PUT":
            raw = await request.body()
            fmt = "toml" if "toml" in request.headers.get("content-type", "") else "yaml"  # YAML also reads JSON
            try:
                policy = parse_policy_text(raw.decode("utf-8", "replace"), fmt=fmt)
            except ConfigError as e:
                return _err(400, str(e), "invalid_request_error", "invalid_policy")
            self.policy = policy
            self._refresh_policy_flags()
        return Response(orjson.dumps(self.policy.to_dict()), media_type=_JSON)

    async def admin_flags(self, request: Request) -> Response:
        if (denied := self._admin_denied(request)) is not None:
            return denied
        if request.method == "POST":
            data = await self._admin_json(request)
            if isinstance(data, Response):
                return data
            kind, ident = ("c", data.get("cluster_id")) if data.get("cluster_id") and not data.get("account_id") \
                else ("a", data.get("account_id"))
            if not isinstance(ident, str) or not ident:
                return _err(400, "give 'account_id' or 'cluster_id'", "invalid_request_error", "missing_field")
            flagged = bool(data.get("flagged", True))
            score = data.get("score", 1.0 if flagged else 0.0)
            if not isinstance(score, (int, float)):
                return _err(400, "'score' must be a number", "invalid_request_error", "invalid_field")
            flag = None if (not flagged and not score) else {"score": float(score), "flagged": flagged,
                                                             "reasons": data.get("reasons") or [], "at": time.time(),
                                                             "source": "admin"}
            try:
                await self.state.set_flag(kind, ident, flag)
            except StateBackendError as e:
                return _err(503, str(e), "server_error", "state_unavailable")
        try:
            flags = await self.state.all_flags()
        except StateBackendError as e:
            return _err(503, str(e), "server_error", "state_unavailable")
        out = [{"kind": "account" if k.startswith("a:") else "cluster", "id": k[2:], **v} for k, v in sorted(flags.items())]
        return Response(orjson.dumps({"flags": out}), media_type=_JSON)


class _DetectorWorker:
    """One thread running ``detector.process`` on queued events, in arrival order; a changed verdict
    is handed back to the event loop to be stored."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.q: deque = deque()
        self.wake = threading.Event()
        self.enqueued = 0
        self.processed = 0
        self.errors = 0
        self.thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.thread is not None and self.thread.is_alive():
            return
        self.loop, self._stop = loop, False
        self.thread = threading.Thread(target=self._run, name="distillguard-detect", daemon=True)
        self.thread.start()
        self.gw.metrics.gauges["detector_queue_depth"] = lambda: float(len(self.q))
        self.gw.metrics.gauges["detector_errors"] = lambda: float(self.errors)

    def put(self, account_id: str, event: dict) -> None:
        self.q.append((account_id, event))
        self.enqueued += 1
        self.wake.set()

    def busy(self) -> bool:
        return self.processed < self.enqueued

    def stop(self) -> None:
        self._stop = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join(10)

    def _run(self) -> None:
        gw, q = self.gw, self.q
        while True:
            self.wake.wait(0.5)
            self.wake.clear()
            while q:
                account_id, event = q.popleft()
                try:
                    verdict = gw.detector.process(event)
                    change = gw._verdict_change(account_id, verdict)
                    if change is not None and self.loop is not None:
                        self.loop.call_soon_threadsafe(gw._schedule_store, account_id, verdict, *change)
                except Exception:  # noqa: BLE001 - a detector bug must not stop detection or serving
                    self.errors += 1
                finally:
                    self.processed += 1
            if self._stop:
                return


class _SSEResponse(Response):
    """Pass the upstream's server-sent events through chunk by chunk; assemble the body for the log;
    when the client goes away, close the upstream stream at once (which cancels the generation)."""

    def __init__(self, gw: Gateway, ctx: _ReqCtx, upstream: aiohttp.ClientResponse):
        self.gw, self.ctx, self.up = gw, ctx, upstream
        self.status_code = 200
        self.background = None
        self.body = b""
        self.raw_headers = [(b"content-type", upstream.headers.get("content-type", "text/event-stream").encode()),
                            (b"cache-control", b"no-cache"), (b"x-request-id", ctx.request_id.encode())]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        asm = _StreamAssembler(self.ctx.endpoint)
        task = asyncio.current_task()
        state = {"done": False, "disconnected": False}

        async def watch() -> None:
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    if not state["done"]:
                        state["disconnected"] = True
                        if task is not None:
                            task.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        error: dict | None = None
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in self.up.content.iter_any():
                asm.feed(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            state["done"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["disconnected"]:
                raise
        except OSError:
            state["disconnected"] = True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            error = {"message": "the upstream stream broke off", "type": "server_error", "code": "upstream_stream_error"}
            self.gw.metrics.inc("upstream_errors_total", kind="stream")
            with contextlib.suppress(Exception):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            state["done"] = True
            watcher.cancel()
            if state["disconnected"] or error is not None:
                self.up.close()  # drop the connection: the upstream stops generating
            else:
                self.up.release()
            self.ctx.upstream_ms = None
            extra: dict[str, Any] = {}
            if state["disconnected"]:
                self.gw.metrics.inc("client_disconnects_total")
                extra["client_disconnected"] = True
            await self.gw._after(self.ctx, 200, asm.body(), error, **extra)
