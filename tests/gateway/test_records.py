"""What the gateway writes and feeds on: watermark key ids, 401 records, the account file."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from gwhelpers import CHAT, KEYS, FlagAfterK, auth

from distillguard.errors import ConfigError, DistillguardError
from distillguard.gateway.app import load_accounts
from distillguard.gateway.keys import KeyStore
from distillguard.gateway.policy import Policy
from distillguard.provenance.suspects import read_served


def run(coro):
    return asyncio.run(coro)


def test_watermark_key_id_on_every_forwarded_record(make_gw, tmp_path):
    policy = {"watermark_key_id": {"m": "wk-m", "*": "wk-default"},
              "quotas": {"key": {"requests_per_minute": 3}}}

    async def go():
        async with make_gw(policy) as g:
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())            # model m
            await g.client.post("/v1/chat/completions", json=dict(CHAT, model="other", stream=True), headers=auth())
            await g.client.post("/v1/completions", json={"model": "x", "prompt": "hi"}, headers=auth())
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())            # over quota: 429
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(1))
            await g.client.post("/v1/chat/completions", json=dict(CHAT, model="error-500"), headers=auth(1))
            await g.client.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=auth(1))
            await g.client.post("/v1/chat/completions", json=CHAT)                              # 401
            return g.records()

    recs = run(go())
    got = [(r["status_code"], r.get("watermark_key_id")) for r in recs]
    assert got == [(200, "wk-m"), (200, "wk-default"), (200, "wk-default"), (429, None), (200, "wk-m"),
                   (500, "wk-default"), (200, None), (401, None)]
    # provenance reads the gateway's log as tagged traffic: answered records of the key under test
    log = tmp_path / "tagged.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    served, stats = read_served([log], key_id="wk-m")
    assert [s.answer for s in served] == ["Hello there.", "Hello there."] and stats["untagged"] == 0


def test_watermark_key_id_policy_validation():
    assert Policy.from_dict({"watermark_key_id": "wk-1"}).to_dict()["watermark_key_id"] == "wk-1"
    for bad in ("", 5, {"m": 3}, {}, ["wk"]):
        with pytest.raises(ConfigError, match="watermark_key_id"):
            Policy.from_dict({"watermark_key_id": bad})


def test_client_cannot_set_watermark_key_id(make_gw):
    async def go():
        async with make_gw({"watermark_key_id": "wk-real"}) as g:
            await g.client.post("/v1/chat/completions", json=dict(CHAT, watermark_key_id="wk-fake", watermark=False),
                                headers=auth())
            return g.records()

    rec = run(go())[0]
    assert rec["watermark_key_id"] == "wk-real"


def test_401_logged_marked_and_never_fed_to_the_detector(make_gw):
    det = FlagAfterK(k=1000)

    async def go():
        async with make_gw(detector=det, admin_token="adm-1") as g:
            await g.client.post("/v1/chat/completions", json=CHAT)                                      # missing
            await g.client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer sk-nope"})
            await g.client.delete("/admin/keys/k-bob", headers={"Authorization": "Bearer adm-1"})
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(1))                    # revoked
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(0))                    # served
            await g.client.post("/v1/chat/completions", content=b"{oops", headers=auth(0))             # 400
            await g.client.post("/v1/chat/completions", content=b"{oops")                              # 400, no key
            return g.records()

    recs = run(go())
    assert [(r["status_code"], r["account_id"], r.get("distillguard", {}).get("auth")) for r in recs] == [
        (401, "unauthenticated", "missing"), (401, "unauthenticated", "invalid"), (401, "bob", "revoked"),
        (200, "alice", None), (400, "alice", None), (400, "unauthenticated", "missing")]
    # the detector saw only requests with a valid key (the served one and alice's malformed one), never
    # "unauthenticated", never the revoked key
    assert [e["account_id"] for e in det.events] == ["alice", "alice"]


def test_reserved_account_id_refused():
    with pytest.raises(ConfigError, match="reserved"):
        KeyStore().add(api_key="sk-x", account_id="unauthenticated")


def test_admin_cannot_create_key_for_reserved_account(make_gw):
    async def go():
        async with make_gw(admin_token="adm-1") as g:
            return await g.client.post("/admin/keys", json={"account_id": "unauthenticated"},
                                       headers={"Authorization": "Bearer adm-1"})

    r = run(go())
    assert r.status_code == 400 and "reserved" in r.json()["error"]["message"]


def test_accounts_file_read_by_ingest_loader(tmp_path):
    p = tmp_path / "accounts.jsonl"
    p.write_text('{"account_id": "a", "created_at": "2026-01-01T00:00:00Z", "payment_fingerprint": "x"}\n\n'
                 '{"account_id": "b", "verified": true}\n{"account_id": "a", "payment_fingerprint": "y"}\n')
    acc = load_accounts(p)
    assert set(acc) == {"a", "b"} and acc["a"]["payment_fingerprint"] == "y"  # later lines win, as in scan
    assert acc["b"]["verified"] is True and acc["b"]["created_at"] is None
    p.write_text('{"account_id": "a", "created_at": "2026-01-01T00:00:00Z"}\n')
    assert load_accounts(p)["a"]["created_at"] == 1767225600.0  # typed like scan/replay give the detector
    p.write_text('{"account_id": "a"}\n{"account_id": "b", "verified": "yes"}\nnot json\n')
    with pytest.raises(ConfigError, match=r"accounts.jsonl:2: .*verified.*2 bad line"):
        load_accounts(p)
    with pytest.raises(DistillguardError, match="cannot read"):
        load_accounts(tmp_path / "missing.jsonl")
    assert load_accounts(None) == {}


def test_gateway_cli_rejects_bad_account_file(tmp_path, keys_file):
    import os
    import subprocess
    import sys

    from gwhelpers import REPO

    bad = tmp_path / "accounts.jsonl"
    bad.write_text('{"account_id": 7}\n')
    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "gateway", "--upstream", "http://127.0.0.1:9",
                        "--keys", str(keys_file), "--log-dir", str(tmp_path / "l"), "--accounts", str(bad)],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")), cwd=REPO,
                       timeout=60)
    assert r.returncode == 2 and "accounts.jsonl:1" in r.stderr and "account_id" in r.stderr
    assert KEYS[0]["api_key"] not in r.stderr


def test_crlf_in_forwarded_header_value_is_dropped(make_gw, upstream):
    """A header value carrying CR/LF (possible from a lenient front server) never reaches the upstream's
    request head: the gateway sends its default Accept instead."""

    async def go():
        async with make_gw() as g:
            sent = []

            async def receive():
                return {"type": "http.request", "body": orjson.dumps(CHAT), "more_body": False}

            async def send(msg):
                sent.append(msg)

            scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("1.2.3.4", 1),
                     "headers": [(b"authorization", b"Bearer " + KEYS[0]["api_key"].encode()),
                                 (b"accept", b"text/plain\r\nX-Evil: 1")]}
            await g.gw.app(scope, receive, send)
            return sent, dict(upstream.stats.last_headers)

    sent, seen = run(go())
    assert sent[0]["status"] == 200
    assert "x-evil" not in seen and seen["accept"] == "*/*"


def test_policy_put_applies_watermark_and_timeout(make_gw):
    async def go():
        async with make_gw(admin_token="adm-1") as g:
            h = {"Authorization": "Bearer adm-1"}
            before = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            put = await g.client.put("/admin/policy", content=b"watermark_key_id: wk-new\nupstream_timeout_s: 0.2\n",
                                     headers=h)
            after = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            slow = await g.client.post("/v1/chat/completions", json=dict(CHAT, model="slow-1000"), headers=auth())
            return before, put, after, slow, g.records()

    before, put, after, slow, recs = run(go())
    assert put.status_code == 200 and put.json()["watermark_key_id"] == "wk-new"
    assert before.status_code == after.status_code == 200 and slow.status_code == 504
    assert [r.get("watermark_key_id") for r in recs] == [None, "wk-new", "wk-new"]


def test_repeated_authorization_header_first_counts(make_gw):
    """A second Authorization header cannot swap in another identity after a refused first one."""

    async def call(g, headers):
        sent = []

        async def receive():
            return {"type": "http.request", "body": orjson.dumps(CHAT), "more_body": False}

        async def send(msg):
            sent.append(msg)

        await g.gw.app({"type": "http", "method": "POST", "path": "/v1/chat/completions", "client": ("1.2.3.4", 1),
                        "headers": headers}, receive, send)
        return sent[0]["status"]

    async def go():
        async with make_gw() as g:
            good = b"Bearer " + KEYS[0]["api_key"].encode()
            a = await call(g, [(b"authorization", b"Bearer sk-wrong"), (b"authorization", good)])
            b = await call(g, [(b"authorization", good), (b"authorization", b"Bearer sk-wrong")])
            return a, b, g.records()

    a, b, recs = run(go())
    assert (a, b) == (401, 200)
    assert [r["account_id"] for r in recs] == ["unauthenticated", "alice"]
