"""Security checks: authentication, the admin API, bad bodies, header injection, secrets never leak."""

from __future__ import annotations

import asyncio

import pytest
from gwhelpers import ALL_SECRETS, CHAT, auth

ADMIN = "adm-token-0123456789"


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer sk-not-a-real-key"},
    {"Authorization": "Basic c2stYWxpY2Utc2VjcmV0LTAwMDE="},
    {"Authorization": "Bearer "},
    {"Authorization": "sk-alice-secret-0001"},
])
def test_bad_keys_are_401_and_never_forwarded(make_gw, upstream, headers):
    async def go():
        async with make_gw() as g:
            before = upstream.stats.requests
            r = await g.client.post("/v1/chat/completions", json=CHAT, headers=headers)
            m = await g.client.get("/v1/models", headers=headers)
            return r, m, upstream.stats.requests - before, g.records()

    r, m, forwarded, recs = run(go())
    assert r.status_code == 401 and m.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert forwarded == 0
    assert [x["status_code"] for x in recs] == [401, 401]  # refused requests are logged too
    assert recs[0]["account_id"] == "unauthenticated" and "api_key_id" not in recs[0]


def test_admin_refuses_everything_without_token(make_gw):
    async def go():
        async with make_gw(admin_token=None) as g:
            return [await g.client.request(m, p, headers={"Authorization": "Bearer anything"}, json={"account_id": "x"})
                    for m, p in [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("DELETE", "/admin/keys/k-alice"),
                                 ("GET", "/admin/policy"), ("PUT", "/admin/policy"), ("GET", "/admin/flags"),
                                 ("POST", "/admin/flags")]]

    rs = run(go())
    assert {r.status_code for r in rs} == {403}
    assert all(r.json()["error"]["code"] == "admin_disabled" for r in rs)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer " + ADMIN[:-1]},
                                     {"Authorization": "Bearer sk-alice-secret-0001"}, {"X-Admin-Token": ADMIN}])
def test_admin_wrong_token_is_401(make_gw, headers):
    async def go():
        async with make_gw(admin_token=ADMIN) as g:
            a = await g.client.post("/admin/keys", json={"account_id": "mallory"}, headers=headers)
            b = await g.client.delete("/admin/keys/k-alice", headers=headers)
            c = await g.client.get("/admin/flags", headers=headers)
            d = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            return a, b, c, d

    a, b, c, d = run(go())
    assert a.status_code == b.status_code == c.status_code == 401
    assert d.status_code == 200  # nothing was revoked


def test_admin_create_revoke_policy_flags(make_gw):
    h = {"Authorization": "Bearer " + ADMIN}

    async def go():
        async with make_gw(admin_token=ADMIN) as g:
            c = g.client
            new = (await c.post("/admin/keys", json={"account_id": "carol", "api_key_id": "k-carol"}, headers=h)).json()
            ok = await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + new["api_key"]})
            listing = (await c.get("/admin/keys", headers=h)).text
            rev = await c.delete("/admin/keys/k-carol", headers=h)
            after = await c.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer " + new["api_key"]})
            revoked_alice = await c.delete("/admin/keys/k-alice", headers=h)
            alice = await c.post("/v1/chat/completions", json=CHAT, headers=auth(0))
            bad_pol = await c.put("/admin/policy", content=b"rules: [{action: explode}]", headers=h)
            pol = await c.put("/admin/policy", content=b"rules: [{flagged: true, action: block}]", headers=h)
            flag = await c.post("/admin/flags", json={"account_id": "bob", "flagged": True, "score": 0.9}, headers=h)
            bob = await c.post("/v1/chat/completions", json=CHAT, headers=auth(1))
            return new, ok, listing, rev, after, revoked_alice, alice, bad_pol, pol, flag, bob, g.records()

    new, ok, listing, rev, after, revoked_alice, alice, bad_pol, pol, flag, bob, recs = run(go())
    assert new["api_key"].startswith("sk-dg-") and ok.status_code == 200
    assert new["api_key"] not in listing and "k-carol" in listing
    assert rev.status_code == 200 and after.status_code == 401 and "revoked" in after.json()["error"]["message"]
    assert revoked_alice.status_code == 200 and alice.status_code == 401
    assert bad_pol.status_code == 400 and pol.status_code == 200 and pol.json()["rules"][0]["action"] == "block"
    assert flag.json()["flags"][0]["id"] == "bob" and bob.status_code == 403
    assert new["api_key"] not in str(recs)


def test_oversized_body_is_413_not_forwarded(make_gw, upstream):
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}

    async def chunks():
        for _ in range(10):
            yield b"x" * 1000

    async def go():
        async with make_gw({"max_body_bytes": 2000}) as g:
            before = upstream.stats.requests
            a = await g.client.post("/v1/chat/completions", json=big, headers=auth())
            b = await g.client.post("/v1/chat/completions", content=chunks(), headers=auth())  # no content-length
            return a, b, upstream.stats.requests - before, g.records()

    a, b, forwarded, recs = run(go())
    assert a.status_code == b.status_code == 413 and a.json()["error"]["code"] == "request_too_large"
    assert forwarded == 0 and [r["status_code"] for r in recs] == [413, 413]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_is_400(make_gw, upstream, raw):
    async def go():
        async with make_gw() as g:
            before = upstream.stats.requests
            r = await g.client.post("/v1/chat/completions", content=raw,
                                    headers=dict(auth(), **{"content-type": "application/json"}))
            return r, upstream.stats.requests - before, g.records()

    r, forwarded, recs = run(go())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert forwarded == 0 and recs[0]["status_code"] == 400 and recs[0]["account_id"] == "alice"


def test_header_injection_does_not_reach_upstream_or_change_identity(make_gw, upstream):
    evil = {"X-Account-Id": "bob", "OpenAI-Organization": "org-victim", "X-Forwarded-For": "6.6.6.6",
            "X-Distillguard-No-Log": "1", "X-Api-Key": "sk-bob-secret-0002", "Cookie": "session=1"}

    async def go():
        async with make_gw() as g:
            r = await g.client.post("/v1/chat/completions", json=CHAT, headers=dict(auth(), **evil))
            return r, dict(upstream.stats.last_headers), g.records()

    r, seen, recs = run(go())
    assert r.status_code == 200
    lowered = {k.lower() for k in evil} | {"authorization"}
    assert not (lowered & set(seen)), seen  # only the gateway's own headers are sent upstream
    assert all(s not in str(seen) for s in ALL_SECRETS)
    assert recs[0]["account_id"] == "alice" and recs[0]["client_ip"] == "10.1.2.3"


def test_request_fields_cannot_disable_logging_or_watermarking(make_gw, upstream):
    body = dict(CHAT, watermark=False, disable_watermark=True, no_log=True, distillguard={"log": False})

    async def go():
        async with make_gw() as g:
            r = await g.client.post("/v1/chat/completions", json=body, headers=auth())
            return r, upstream.stats.last_body, g.records()

    r, forwarded, recs = run(go())
    assert r.status_code == 200
    assert forwarded == CHAT  # the control fields never reach the upstream (which watermarks)
    assert len(recs) == 1 and recs[0]["request"] == body  # and the request is logged as sent


def test_keys_never_in_logs_metrics_or_errors(make_gw):
    attacker = "sk-attacker-guess-ZZZ"

    async def go():
        async with make_gw({"quotas": {"key": {"requests_per_minute": 2}}}, admin_token=ADMIN) as g:
            c = g.client
            bodies = []
            for h in [auth(0), auth(0), auth(0), auth(1), {"Authorization": "Bearer " + attacker}]:
                for ep, body in [("/v1/chat/completions", CHAT), ("/v1/chat/completions", dict(CHAT, model="error-500"))]:
                    bodies.append((await c.post(ep, json=body, headers=h)).text)
            bodies.append((await c.post("/v1/chat/completions", content=b"{bad", headers=auth(1))).text)
            bodies.append((await c.get("/admin/keys", headers={"Authorization": "Bearer " + ADMIN})).text)
            g.gw.sink.flush()
            logs = b"".join(p.read_bytes() for p in g.gw.sink.log_dir.glob("*")).decode()
            metrics = (await c.get("/metrics")).text
            return bodies, logs, metrics

    bodies, logs, metrics = run(go())
    assert logs.count('"request_id"') == 11
    for secret in ALL_SECRETS + [attacker, ADMIN]:
        assert secret not in logs and secret not in metrics
        assert all(secret not in b for b in bodies)
