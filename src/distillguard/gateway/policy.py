"""The gateway policy: what to do with a detector score or flag, quotas, allowlists.

A policy file is YAML (``.yaml``/``.yml``) or TOML (``.toml``)::

    mode: enforce              # or "shadow": decide and log, never refuse or modify
    fail_mode: open            # when Redis is unreachable: "open" (admit) or "closed" (503)
    max_body_bytes: 1048576
    upstream_timeout_s: 120
    allowlist: {accounts: [big-customer], api_key_ids: []}
    rules:                     # first match wins; a rule matches when its conditions all hold
      - {min_score: 0.95, action: block}
      - {flagged: true, action: throttle, retry_after_s: 60}
      - {min_score: 0.5, action: cap, max_n: 1, max_tokens: 512, strip_logprobs: true}
    quotas:                    # per key, per account, per cluster (linked accounts share one)
      key:     {requests_per_minute: 600}
      account: {requests_per_day: 100000, tokens_per_day: 20000000}
      cluster: {requests_per_minute: 600, tokens_per_day: 50000000}
    strip_request_fields: [watermark, disable_watermark, distillguard, no_log]
    watermark_key_id: wk-2026-11   # the upstream watermarks with this key: every record it answered
                                   # carries it (or per model: {"model-a": wk-a, "*": wk-default})

Actions: ``shadow`` (log only), ``throttle`` (429 + Retry-After), ``strip_logprobs``, ``cap``
(``max_n``, ``max_tokens``, optional ``strip_logprobs``), ``block`` (403).

Example:

>>> p = Policy.from_dict({"rules": [{"flagged": True, "action": "block"}]})
>>> p.match(score=0.2, flagged=True).action
'block'
>>> p.match(score=0.2, flagged=False) is None
True
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillguard.errors import ConfigError

__all__ = ["ACTIONS", "QUOTA_FIELDS", "Policy", "Quota", "Rule", "load_policy"]

ACTIONS = ("shadow", "throttle", "strip_logprobs", "cap", "block")
QUOTA_FIELDS = ("requests_per_minute", "requests_per_day", "tokens_per_minute", "tokens_per_day")
SCOPES = ("key", "account", "cluster")
DEFAULT_STRIP = ("watermark", "disable_watermark", "no_watermark", "distillguard", "no_log", "disable_logging")


@dataclass(frozen=True)
class Rule:
    action: str
    min_score: float | None = None
    flagged: bool | None = None
    retry_after_s: int = 60
    max_n: int | None = None
    max_tokens: int | None = None
    strip_logprobs: bool = False

    def matches(self, *, score: float, flagged: bool) -> bool:
        if self.flagged is not None and self.flagged != flagged:
            return False
        if self.min_score is not None and score < self.min_score:
            return False
        return self.flagged is not None or self.min_score is not None


@dataclass(frozen=True)
class Quota:
    """Limits for one scope; 0 means unlimited."""

    requests_per_minute: int = 0
    requests_per_day: int = 0
    tokens_per_minute: int = 0
    tokens_per_day: int = 0

    def as_list(self) -> list[int]:
        return [self.requests_per_minute, self.requests_per_day, self.tokens_per_minute, self.tokens_per_day]


@dataclass(frozen=True)
class Policy:
    mode: str = "enforce"
    fail_mode: str = "open"
    max_body_bytes: int = 1 << 20
    upstream_timeout_s: float = 120.0
    rules: tuple[Rule, ...] = ()
    quotas: dict[str, Quota] = field(default_factory=dict)
    allow_accounts: frozenset[str] = frozenset()
    allow_key_ids: frozenset[str] = frozenset()
    strip_request_fields: tuple[str, ...] = DEFAULT_STRIP
    watermark_key_id: str | dict[str, str] | None = None

    def match(self, *, score: float, flagged: bool) -> Rule | None:
        for r in self.rules:
            if r.matches(score=score, flagged=flagged):
                return r
        return None

    def quota(self, scope: str) -> Quota:
        return self.quotas.get(scope, Quota())

    def allowlisted(self, account_id: str, api_key_id: str | None) -> bool:
        return account_id in self.allow_accounts or (api_key_id is not None and api_key_id in self.allow_key_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "fail_mode": self.fail_mode, "max_body_bytes": self.max_body_bytes,
            "upstream_timeout_s": self.upstream_timeout_s,
            "rules": [{k: v for k, v in r.__dict__.items() if v is not None} for r in self.rules],
            "quotas": {s: {k: v for k, v in q.__dict__.items() if v} for s, q in self.quotas.items()},
            "allowlist": {"accounts": sorted(self.allow_accounts), "api_key_ids": sorted(self.allow_key_ids)},
            "strip_request_fields": list(self.strip_request_fields),
            **({"watermark_key_id": self.watermark_key_id} if self.watermark_key_id else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Policy":
        d = d or {}
        if not isinstance(d, dict):
            raise ConfigError("a policy must be a mapping (YAML/TOML table) at the top level")
        known = {"mode", "fail_mode", "max_body_bytes", "upstream_timeout_s", "rules", "quotas", "allowlist",
                 "strip_request_fields", "watermark_key_id"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown policy keys {sorted(unknown)}; allowed: {sorted(known)}")
        mode = d.get("mode", "enforce")
        if mode not in ("enforce", "shadow"):
            raise ConfigError(f"policy mode must be 'enforce' or 'shadow', not {mode!r}")
        fail_mode = d.get("fail_mode", "open")
        if fail_mode not in ("open", "closed"):
            raise ConfigError(f"policy fail_mode must be 'open' or 'closed', not {fail_mode!r}")
        rules = []
        for i, r in enumerate(d.get("rules") or []):
            if not isinstance(r, dict) or r.get("action") not in ACTIONS:
                raise ConfigError(f"policy rule {i}: needs 'action' in {ACTIONS}")
            extra = set(r) - {"action", "min_score", "flagged", "retry_after_s", "max_n", "max_tokens", "strip_logprobs"}
            if extra:
                raise ConfigError(f"policy rule {i}: unknown keys {sorted(extra)}")
            if r.get("min_score") is None and r.get("flagged") is None:
                raise ConfigError(f"policy rule {i}: give 'min_score' and/or 'flagged' so it can match")
            rules.append(Rule(**r))
        quotas = {}
        for scope, q in (d.get("quotas") or {}).items():
            if scope not in SCOPES:
                raise ConfigError(f"quota scope {scope!r} unknown; use one of {SCOPES}")
            if not isinstance(q, dict) or set(q) - set(QUOTA_FIELDS):
                raise ConfigError(f"quota {scope!r}: allowed fields are {QUOTA_FIELDS}")
            if any(not isinstance(v, int) or v < 0 for v in q.values()):
                raise ConfigError(f"quota {scope!r}: limits must be integers >= 0 (0 = unlimited)")
            quotas[scope] = Quota(**q)
        allow = d.get("allowlist") or {}
        mbb = d.get("max_body_bytes", 1 << 20)
        if not isinstance(mbb, int) or mbb <= 0:
            raise ConfigError("max_body_bytes must be a positive integer")
        wk = d.get("watermark_key_id")
        if wk is not None and not (isinstance(wk, str) and wk) and not (
                isinstance(wk, dict) and wk and all(isinstance(k, str) and isinstance(v, str) and v for k, v in wk.items())):
            raise ConfigError("watermark_key_id must be a key id (string) or a mapping of model name to key id "
                              "('*' for every other model)")
        return cls(
            mode=mode, fail_mode=fail_mode, max_body_bytes=mbb,
            upstream_timeout_s=float(d.get("upstream_timeout_s", 120.0)), rules=tuple(rules), quotas=quotas,
            allow_accounts=frozenset(allow.get("accounts") or ()), allow_key_ids=frozenset(allow.get("api_key_ids") or ()),
            strip_request_fields=tuple(d.get("strip_request_fields", DEFAULT_STRIP)),
            watermark_key_id=wk or None,
        )


def parse_policy_text(text: str, *, fmt: str = "yaml") -> Policy:
    try:
        data = tomllib.loads(text) if fmt == "toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"policy is not valid {fmt.upper()}: {e}") from None
    return Policy.from_dict(data)


def load_policy(path: str | Path | None) -> Policy:
    """Load a YAML or TOML policy file (None gives the default: no rules, no quotas)."""
    if path is None:
        return Policy()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read policy file {p}: {e.strerror}") from None
    return parse_policy_text(text, fmt="toml" if p.suffix == ".toml" else "yaml")
