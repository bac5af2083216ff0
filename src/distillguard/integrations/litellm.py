"""distillguard inside the LiteLLM proxy: log every call, detect online, enforce the same policy.

Add to the LiteLLM proxy's ``config.yaml``::

    litellm_settings:
      callbacks: distillguard.integrations.litellm.proxy_handler

and configure it with environment variables (read when the first call arrives):

- ``DISTILLGUARD_LOG_DIR`` (required): where the traffic log goes (contracts §1, ``*.jsonl``);
- ``DISTILLGUARD_POLICY``: policy file (YAML/TOML, same format as the gateway's ``--config``);
- ``DISTILLGUARD_ACCOUNTS``: account file (JSON Lines; shared ``payment_fingerprint`` links accounts);
- ``DISTILLGUARD_REDIS``: ``redis://...`` to share quotas and flags with other proxies/gateways;
- ``DISTILLGUARD_DETECTOR``: ``package.module:Class`` (default: the built-in online detector).

The account of a call is LiteLLM's team id, else its user id, else the key alias, else a short hash
of the (already hashed) virtual key. The pre-call hook admits the call against quotas and current
flags and raises ``HTTPException`` 429 (with ``Retry-After``) or 403 to refuse it, or changes the
request (strip ``logprobs``, cap ``n`` and output length). The success and failure hooks write the
record (the complete assembled response for streams) and run the online detector on it.

The class itself needs no LiteLLM to be constructed, which keeps this module importable (and its
logic testable) where LiteLLM is not installed; when it is, the class derives from LiteLLM's
``CustomGuardrail``.

Example (no LiteLLM needed):

>>> import tempfile
>>> h = DistillguardLiteLLM(log_dir=tempfile.mkdtemp())
>>> h.account_of({"team_id": "team-a"})
'team-a'
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import orjson

from distillguard.errors import ConfigError, RecordRejected, StateBackendError
from distillguard.gateway.app import Gateway, _rfc3339, load_accounts, load_detector, payment_clusters
from distillguard.gateway.logsink import LogSink
from distillguard.gateway.policy import Policy, load_policy
from distillguard.gateway.state import Admission, MemoryState, make_state
from distillguard.schema import event_from_record

__all__ = ["DistillguardLiteLLM", "Refused", "proxy_handler"]

try:  # pragma: no cover - depends on the environment
    from litellm.integrations.custom_guardrail import CustomGuardrail as _Base
except Exception:  # noqa: BLE001 - LiteLLM absent or broken: keep the plain class usable
    _Base = object


class Refused(Exception):
    """Raised where LiteLLM (and its FastAPI) is absent; carries ``status_code`` like HTTPException."""

    def __init__(self, status_code: int, detail: dict, headers: dict | None = None):
        super().__init__(detail["error"]["message"])
        self.status_code, self.detail, self.headers = status_code, detail, headers


def _refusal(status: int, message: str, type_: str, code: str, headers: dict | None = None) -> Exception:
    detail = {"error": {"message": message, "type": type_, "code": code}}
    try:
        from fastapi import HTTPException

        return HTTPException(status_code=status, detail=detail, headers=headers)
    except ImportError:
        return Refused(status, detail, headers)


def _as_dict(obj: Any) -> dict | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj
    for attr in ("model_dump", "dict", "json"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                out = fn()
                return out if isinstance(out, dict) else None
            except Exception:  # noqa: BLE001
                continue
    return None


_SKIP_BODY_KEYS = {"metadata", "litellm_call_id", "litellm_logging_obj", "proxy_server_request", "secret_fields",
                   "litellm_metadata", "user_api_key_dict"}


class DistillguardLiteLLM(_Base):  # type: ignore[misc,valid-type]
    """LiteLLM guardrail + logger applying a distillguard policy (see the module docstring)."""

    def __init__(self, *, log_dir: str | None = None, policy: Policy | None = None, accounts: dict | None = None,
                 redis: str | None = None, detector: Any = None, flush_interval_s: float = 0.2, **kwargs: Any):
        if _Base is not object:
            kwargs.setdefault("guardrail_name", "distillguard")
            kwargs.setdefault("default_on", True)
            kwargs.setdefault("event_hook", "pre_call")
            super().__init__(**kwargs)
        self.log_dir = log_dir
        self.policy = policy or Policy()
        self.accounts = accounts or {}
        self.cluster_hints = payment_clusters(self.accounts)
        self.state = make_state(redis) if redis else MemoryState()
        self.detector = detector
        self.flush_interval_s = flush_interval_s
        self.sink: LogSink | None = None
        self._pending: dict[str, dict] = {}
        self._seq = 0
        self._prefix = os.urandom(4).hex()
        self._verdicts: dict[str, tuple[bool, float, str | None]] = {}
        q = self.policy
        self._limits = q.quota("key").as_list() + q.quota("account").as_list() + q.quota("cluster").as_list()
        # reuse the gateway's verdict bookkeeping (same flags in the same state backend)
        self._gw_like = Gateway.__new__(Gateway)
        self._gw_like.state, self._gw_like._verdicts = self.state, self._verdicts
        self._gw_like.policy = self.policy
        self._gw_like.clock = time.time

        class _M:  # metrics sink for the borrowed method
            def inc(self, *a: Any, **k: Any) -> None:
                return None

        self._gw_like.metrics = _M()

    @classmethod
    def from_env(cls) -> "DistillguardLiteLLM":
        log_dir = os.environ.get("DISTILLGUARD_LOG_DIR")
        if not log_dir:
            raise ConfigError("set DISTILLGUARD_LOG_DIR to the folder for the traffic log")
        accounts = load_accounts(os.environ.get("DISTILLGUARD_ACCOUNTS"))
        return cls(log_dir=log_dir, policy=load_policy(os.environ.get("DISTILLGUARD_POLICY") or None),
                   accounts=accounts, redis=os.environ.get("DISTILLGUARD_REDIS") or None,
                   detector=load_detector(os.environ.get("DISTILLGUARD_DETECTOR") or None, accounts))

    # helpers -----------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self.sink is None:
            if not self.log_dir:
                raise ConfigError("DistillguardLiteLLM needs log_dir (or DISTILLGUARD_LOG_DIR)")
            self.sink = LogSink(log_dir=self.log_dir, flush_interval_s=self.flush_interval_s).start()
        if self.detector is None:
            self.detector = load_detector(None, self.accounts)

    @staticmethod
    def account_of(user_api_key_dict: Any) -> str:
        get = (user_api_key_dict.get if isinstance(user_api_key_dict, dict)
               else lambda k: getattr(user_api_key_dict, k, None))
        for field in ("team_id", "user_id", "key_alias"):
            v = get(field)
            if isinstance(v, str) and v:
                return v
        token = get("token") or get("api_key")
        if isinstance(token, str) and token:
            return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12]
        return "litellm-default"

    @staticmethod
    def key_id_of(user_api_key_dict: Any) -> str:
        get = (user_api_key_dict.get if isinstance(user_api_key_dict, dict)
               else lambda k: getattr(user_api_key_dict, k, None))
        token = get("token") or get("api_key")
        if isinstance(token, str) and token:
            return "key-" + hashlib.sha256(token.encode()).hexdigest()[:12]
        return "key-default"

    def _record(self, ctx: dict, status: int, response: dict | None, error: dict | None = None) -> dict:
        rec: dict[str, Any] = {
            "request_id": ctx["request_id"], "timestamp": _rfc3339(ctx["ts"]), "account_id": ctx["account_id"],
            "api_key_id": ctx["api_key_id"], "endpoint": ctx["endpoint"], "request": ctx["request"],
            "status_code": status, "latency_ms": round((time.time() - ctx["ts"]) * 1000, 3),
        }
        if isinstance(ctx["request"].get("user"), str):
            rec["end_user"] = ctx["request"]["user"]
        if response is not None:
            rec["response"] = response
        wk = self.policy.watermark_key_id
        if wk and ctx.get("forwarded") and ctx["endpoint"] != "/v1/embeddings":
            model = ctx["request"].get("model")
            kid = wk if isinstance(wk, str) else wk.get(model if isinstance(model, str) else "", wk.get("*"))
            if kid:
                rec["watermark_key_id"] = kid
        gw: dict[str, Any] = {"via": "litellm"}
        if ctx.get("action"):
            gw["action"] = ctx["action"]
        if error:
            gw["error"] = error
        rec["distillguard"] = gw
        return rec

    async def _finish(self, ctx: dict, status: int, response: dict | None, error: dict | None = None) -> None:
        self._ensure_started()
        assert self.sink is not None
        rec = self._record(ctx, status, response, error)
        self.sink.put(rec)
        if response and isinstance(response.get("usage"), dict) and any(self._limits[i] for i in (2, 3, 6, 7, 10, 11)):
            u = response["usage"]
            tokens = u.get("total_tokens") if isinstance(u.get("total_tokens"), int) else 0
            try:
                await self.state.add_tokens(ctx["api_key_id"], ctx["account_id"], ctx.get("clusters", ()), tokens,
                                            now=ctx["ts"])
            except StateBackendError:
                pass
        try:
            event = event_from_record(rec)
        except RecordRejected:
            return
        verdict = self.detector.process(event)
        await Gateway._store_verdict(self._gw_like, ctx["account_id"], verdict)

    # LiteLLM hooks -----------------------------------------------------------------------------

    async def async_pre_call_hook(self, user_api_key_dict: Any, cache: Any, data: dict, call_type: Any) -> dict:
        self._ensure_started()
        self._seq += 1
        call_id = data.get("litellm_call_id") or f"{self._prefix}-{self._seq}"
        psr = data.get("proxy_server_request")
        raw_body = psr.get("body") if isinstance(psr, dict) else None
        # the body as the client sent it (LiteLLM adds its own fields to ``data``)
        src = raw_body if isinstance(raw_body, dict) and raw_body else data
        # a deep, JSON-only copy: LiteLLM keeps mutating these dicts after this hook
        request = orjson.loads(orjson.dumps({k: v for k, v in src.items() if k not in _SKIP_BODY_KEYS}, default=str))
        endpoint = {"completion": "/v1/chat/completions", "acompletion": "/v1/chat/completions",
                    "text_completion": "/v1/completions", "atext_completion": "/v1/completions",
                    "embeddings": "/v1/embeddings", "aembedding": "/v1/embeddings",
                    "responses": "/v1/responses", "aresponses": "/v1/responses"}.get(str(call_type), "/v1/chat/completions")
        ctx = {"request_id": f"dg-llm-{self._prefix}-{self._seq:x}", "ts": time.time(),
               "account_id": self.account_of(user_api_key_dict), "api_key_id": self.key_id_of(user_api_key_dict),
               "endpoint": endpoint, "request": request, "action": None, "cluster_id": None}
        pol = self.policy
        if not pol.allowlisted(ctx["account_id"], ctx["api_key_id"]):
            try:
                adm = await self.state.admit(ctx["api_key_id"], ctx["account_id"],
                                             self.cluster_hints.get(ctx["account_id"], ""), self._limits, now=ctx["ts"])
            except StateBackendError:
                if pol.fail_mode == "closed":
                    await self._finish(ctx, 503, None, {"code": "state_unavailable"})
                    raise _refusal(503, "distillguard state unavailable; retry later", "server_error",
                                   "state_unavailable", {"Retry-After": "5"}) from None
                adm = Admission(True)
            ctx["cluster_id"], ctx["clusters"] = adm.cluster_id, adm.clusters
            score, flagged = 0.0, False
            for f in (adm.account_flag, adm.cluster_flag):
                if f:
                    score, flagged = max(score, float(f.get("score", 0.0))), flagged or bool(f.get("flagged"))
            if not adm.ok and pol.mode == "enforce":
                ctx["action"] = "quota"
                await self._finish(ctx, 429, None, {"code": "quota_exceeded"})
                raise _refusal(429, f"{adm.scope} quota {adm.limit} exhausted; retry after {adm.retry_after_s} s",
                               "rate_limit_exceeded", "quota_exceeded", {"Retry-After": str(adm.retry_after_s)})
            rule = pol.match(score=score, flagged=flagged)
            if rule is not None:
                ctx["action"] = rule.action
                if pol.mode == "enforce":
                    if rule.action == "block":
                        await self._finish(ctx, 403, None, {"code": "blocked"})
                        raise _refusal(403, "this account is blocked for suspected model extraction",
                                       "permission_denied", "blocked")
                    if rule.action == "throttle":
                        await self._finish(ctx, 429, None, {"code": "throttled"})
                        raise _refusal(429, f"this account is throttled; retry after {rule.retry_after_s} s",
                                       "rate_limit_exceeded", "throttled", {"Retry-After": str(rule.retry_after_s)})
                    degraded = Gateway._degrade({k: data[k] for k in data if k not in _SKIP_BODY_KEYS}, rule)
                    for k in ("logprobs", "top_logprobs"):
                        if k not in degraded:
                            data.pop(k, None)
                    data.update(degraded)
        for f in pol.strip_request_fields:
            data.pop(f, None)
        self._pending[call_id] = ctx
        if len(self._pending) > 100_000:  # calls that never reached a log hook: keep memory bounded
            for k in list(self._pending)[:50_000]:
                self._pending.pop(k, None)
        return data

    def _ctx_of(self, kwargs: dict) -> dict | None:
        call_id = kwargs.get("litellm_call_id")
        if call_id and call_id in self._pending:
            return self._pending.pop(call_id)
        return None

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        ctx = self._ctx_of(kwargs)
        if ctx is None:
            return
        resp = _as_dict(kwargs.get("complete_streaming_response")) or _as_dict(response_obj)
        ctx["forwarded"] = True
        await self._finish(ctx, 200, resp)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: Any, end_time: Any) -> None:
        ctx = self._ctx_of(kwargs)
        if ctx is None:
            return
        exc = kwargs.get("exception")
        status = getattr(exc, "status_code", None)
        ctx["forwarded"] = True
        await self._finish(ctx, status if isinstance(status, int) else 500, None,
                           {"code": type(exc).__name__ if exc is not None else "error", "message": str(exc)[:500]})

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


class _LazyHandler:
    """Built from the environment on first attribute access (LiteLLM imports the module first)."""

    _inst: DistillguardLiteLLM | None = None


def __getattr__(name: str) -> Any:
    if name == "proxy_handler":
        if _LazyHandler._inst is None:
            _LazyHandler._inst = DistillguardLiteLLM.from_env()
        return _LazyHandler._inst
    raise AttributeError(name)

