"""A simulated "hydra" campaign through the gateway: how much does it get before it is stopped?

Many accounts (one key each) of one operator, each kept under every per-key limit, sending templated
extraction prompts (step-by-step explanations over a broad topic list, maximum output length,
``logprobs``), interleaved with benign accounts. The accounts pay with a few shared cards
(``payment_fingerprint`` in the account file) and come from one /24. Two runs over the same
requests, in-process (``httpx.ASGITransport``) against the fake upstream, on a simulated clock: the
requests are spread evenly over ``days`` days (default 3), so that day quotas slide and the online
detector sees the campaign's real time span (it judges a linked cluster only once its traffic spans
a day):

- per-key limits alone (what common AI gateways offer);
- the gateway's quotas alone: the same per-key limits plus a per-cluster quota (payment-linked);
- the gateway: those quotas plus the online detector with a throttle rule.

Returns the number of campaign requests served in each run, and the benign requests refused.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from typing import Any

import httpx

from distillguard.gateway.app import Gateway
from distillguard.gateway.fakeupstream import FakeUpstream
from distillguard.gateway.keys import KeyStore
from distillguard.gateway.policy import Policy

__all__ = ["run_hydra"]

TOPICS = ["thermodynamics", "tax law", "protein folding", "Rust lifetimes", "baroque music", "compilers",
          "macroeconomics", "organic synthesis", "graph theory", "Roman history", "vaccines", "databases"]


class _Silent:
    """A detector that never flags: isolates what the quotas alone do."""

    def process(self, event: dict) -> Any:
        from distillguard.detect.online import Verdict

        return Verdict(account_id=event["account_id"], score=0.0, flagged=False)


def _campaign(seed: int, accounts: int, per_account: int, benign: int) -> tuple[list, dict, KeyStore]:
    rng = random.Random(seed)
    ks = KeyStore()
    acct_rows: dict[str, dict] = {}
    reqs: list[tuple[str, str, dict, bool]] = []
    for a in range(accounts):
        aid = f"hydra-{a:04d}"
        ks.add(api_key=f"sk-{aid}", account_id=aid, api_key_id=f"k-{aid}")
        acct_rows[aid] = {"account_id": aid, "payment_fingerprint": f"card-{a % 5}", "email_domain": "mail.example"}
        for i in range(per_account):
            topic = rng.choice(TOPICS)
            body = {"model": "m", "max_tokens": 4096, "logprobs": True, "top_logprobs": 5, "temperature": 0.7,
                    "messages": [{"role": "system", "content": "You are a careful expert."},
                                 {"role": "user", "content": f"Explain step by step, showing all reasoning: "
                                                             f"{topic} question #{rng.randrange(10**6)}"}]}
            reqs.append((aid, f"203.0.113.{a % 250}", body, True))
    for b in range(benign):
        aid = f"benign-{b:03d}"
        ks.add(api_key=f"sk-{aid}", account_id=aid, api_key_id=f"k-{aid}")
        acct_rows[aid] = {"account_id": aid, "payment_fingerprint": f"card-b{b}"}
        for i in range(per_account):
            body = {"model": "m", "messages": [{"role": "user", "content": f"help me with my {rng.choice(TOPICS)} homework"}]}
            reqs.append((aid, f"198.51.{b}.{i % 7}", body, False))
    rng.shuffle(reqs)
    return reqs, acct_rows, ks


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _drive(gw: Gateway, reqs: list, clock: _Clock, step_s: float) -> dict[str, int]:
    served = refused_campaign = benign_refused = 0
    async with gw.lifespan_context():
        transport = httpx.ASGITransport(app=gw.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            for aid, ip, body, is_campaign in reqs:
                clock.t += step_s
                r = await c.post("/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer sk-{aid}", "X-Forwarded-For": ip,
                                          "User-Agent": "python-requests/2.31" if is_campaign else "OpenAI/Python 1.40"})
                if is_campaign:
                    if r.status_code == 200:
                        served += 1
                    else:
                        refused_campaign += 1
                elif r.status_code != 200:
                    benign_refused += 1
                await gw.drain()  # a verdict applies from the next request on, as in a gateway under light load
    return {"served": served, "refused": refused_campaign, "benign_refused": benign_refused}


def run_hydra(*, seed: int = 1, accounts: int = 100, per_account: int = 20, benign: int = 10,
              key_limit_per_day: int = 50, cluster_limit_per_day: int = 100, days: float = 3.0) -> dict[str, Any]:
    """Served campaign requests: per-key limits alone vs the gateway (see the module docstring)."""
    from distillguard.detect.online import OnlineDetector

    reqs, acct_rows, ks = _campaign(seed, accounts, per_account, benign)
    up = FakeUpstream().start()
    try:
        key_only = Policy.from_dict({"quotas": {"key": {"requests_per_day": key_limit_per_day}}})
        full = Policy.from_dict({
            "quotas": {"key": {"requests_per_day": key_limit_per_day},
                       "cluster": {"requests_per_day": cluster_limit_per_day}},
            "rules": [{"flagged": True, "action": "throttle", "retry_after_s": 3600},
                      {"min_score": 0.5, "action": "cap", "max_n": 1, "max_tokens": 256, "strip_logprobs": True}],
        })
        out = {}
        for name, policy, det in (("per_key_only", key_only, OnlineDetector(accounts=acct_rows)),
                                  ("quotas_only", full, _Silent()),
                                  ("gateway", full, OnlineDetector(accounts=acct_rows))):
            with tempfile.TemporaryDirectory() as d:
                clock = _Clock(1767225600.0)  # 2026-01-01T00:00:00Z
                gw = Gateway(upstream=up.url, keys=ks, log_dir=d, policy=policy, accounts=acct_rows,
                             detector=det, trust_forwarded_for=True, clock=clock)
                out[name] = asyncio.run(_drive(gw, reqs, clock, days * 86400.0 / len(reqs)))
    finally:
        up.stop()
    return {
        "seed": seed, "accounts": accounts, "requests": accounts * per_account, "benign_accounts": benign,
        "days": days,
        "served_per_key_only": out["per_key_only"]["served"], "served_gateway": out["gateway"]["served"],
        "served_cluster_quota_no_detector": out["quotas_only"]["served"],
        "benign_refused_per_key_only": out["per_key_only"]["benign_refused"],
        "benign_refused_gateway": out["gateway"]["benign_refused"],
        "gateway_rule": f"key {key_limit_per_day}/day + payment-linked cluster {cluster_limit_per_day}/day + detector",
    }
