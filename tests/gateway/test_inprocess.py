"""The gateway in-process (httpx.ASGITransport) against the fake upstream: serving, policy, quotas."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from gwhelpers import CHAT, KEYS, FlagAfterK, auth

from distillguard.schema import event_from_record


def run(coro):
    return asyncio.run(coro)


def test_chat_plain_logged_as_contract_record(make_gw, upstream):
    from distillguard.detect.online import OnlineDetector

    async def go():
        async with make_gw(detector=OnlineDetector()) as g:  # the real detector runs on the request
            r = await g.client.post("/v1/chat/completions", json=dict(CHAT, user="eu-7"),
                                    headers=dict(auth(), **{"User-Agent": "OpenAI/Python 1.0"}))
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == "Hello there."
            return g.records()

    recs = run(go())
    assert len(recs) == 1
    rec = recs[0]
    assert rec["account_id"] == "alice" and rec["api_key_id"] == "k-alice"
    assert rec["endpoint"] == "/v1/chat/completions" and rec["status_code"] == 200
    assert rec["request"] == dict(CHAT, user="eu-7")
    assert rec["end_user"] == "eu-7" and rec["client_ip"] == "10.1.2.3" and rec["user_agent"] == "OpenAI/Python 1.0"
    assert rec["response"]["usage"]["completion_tokens"] == 3
    ev = event_from_record(rec)  # the log is valid input for ingest/scan/replay
    assert ev["prompt"] == "hello" and ev["completion_tokens"] == 3


@pytest.mark.parametrize("endpoint,body,field", [
    ("/v1/completions", {"model": "m", "prompt": "hi"}, "text_completion"),
    ("/v1/responses", {"model": "m", "input": "hi"}, "response"),
    ("/v1/embeddings", {"model": "m", "input": ["a", "b"]}, "list"),
])
def test_other_endpoints(make_gw, endpoint, body, field):
    async def go():
        async with make_gw() as g:
            r = await g.client.post(endpoint, json=body, headers=auth())
            m = await g.client.get("/v1/models", headers=auth())
            return r, m, g.records()

    r, m, recs = run(go())
    assert r.status_code == 200 and r.json()["object"] == field
    assert m.status_code == 200 and m.json()["data"][0]["id"] == "fake"
    assert [x["endpoint"] for x in recs] == [endpoint, "/v1/models"]


def test_stream_assembled_in_log(make_gw):
    async def go():
        async with make_gw() as g:
            r = await g.client.post("/v1/chat/completions", json=dict(CHAT, stream=True, fake_chunks=4), headers=auth())
            return r, g.records()

    r, recs = run(go())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.count("data: ") == 6 and r.text.rstrip().endswith("data: [DONE]")
    resp = recs[0]["response"]
    assert resp["choices"][0]["message"] == {"role": "assistant", "content": "w0 w1 w2 w3 "}
    assert resp["choices"][0]["finish_reason"] == "stop"
    assert resp["usage"]["completion_tokens"] == 4
    assert event_from_record(recs[0])["response_text"] == "w0 w1 w2 w3 "


@pytest.mark.parametrize("model,status,code", [
    ("error-500", 500, "500"), ("error-429", 429, "429"), ("error-503", 503, "503"),
    ("drop", 502, "upstream_unavailable"),
])
def test_upstream_faults_become_openai_errors(make_gw, upstream, model, status, code):
    async def go():
        async with make_gw() as g:
            before = upstream.stats.requests
            r = await g.client.post("/v1/chat/completions", json=dict(CHAT, model=model), headers=auth())
            return r, upstream.stats.requests - before, g.records()

    r, sent, recs = run(go())
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and "message" in r.json()["error"]
    assert sent == 1  # never retried (no double billing)
    assert recs[0]["status_code"] == status and "response" not in recs[0]


def test_upstream_timeout_is_504(make_gw):
    async def go():
        async with make_gw({"upstream_timeout_s": 0.2}) as g:
            return await g.client.post("/v1/chat/completions", json=dict(CHAT, model="slow-2000"), headers=auth())

    r = run(go())
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_unreachable_upstream_is_502(make_gw):
    async def go():
        async with make_gw(upstream="http://127.0.0.1:9") as g:
            return await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())

    r = run(go())
    assert r.status_code == 502 and r.json()["error"]["type"] == "server_error"


@pytest.mark.parametrize("detector_thread", [False, True])
def test_detector_flag_then_throttle_and_block(make_gw, detector_thread):
    det = FlagAfterK(k=3)

    async def go():
        async with make_gw({"rules": [{"min_score": 0.995, "action": "block"},
                                      {"flagged": True, "action": "throttle", "retry_after_s": 17}]},
                           detector=det, detector_thread=detector_thread) as g:
            codes = []
            for _ in range(5):
                r = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
                codes.append(r.status_code)
            other = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(1))
            return codes, r, other, g.records()

    codes, last, other, recs = run(go())
    # requests 1-3 are served; the 3rd raises the flag, so 4 and 5 are throttled
    assert codes == [200, 200, 200, 429, 429]
    assert last.headers["retry-after"] == "17" and last.json()["error"]["code"] == "throttled"
    assert other.status_code == 200  # another account is not affected
    assert len(recs) == 6 and [r["status_code"] for r in recs[:5]] == codes
    assert recs[3]["distillguard"]["action"] == "throttle"
    assert len(det.events) == 6  # the detector saw every request, refused ones included


def test_block_is_403(make_gw):
    async def go():
        async with make_gw({"rules": [{"flagged": True, "action": "block"}]}, detector=FlagAfterK(k=1)) as g:
            a = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            b = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            return a, b

    a, b = run(go())
    assert a.status_code == 200 and b.status_code == 403 and b.json()["error"]["code"] == "blocked"


def test_degrade_strips_logprobs_and_caps(make_gw, upstream):
    async def go():
        async with make_gw({"rules": [{"flagged": True, "action": "cap", "max_n": 1, "max_tokens": 64,
                                       "strip_logprobs": True}]}, detector=FlagAfterK(k=1)) as g:
            body = dict(CHAT, n=8, max_tokens=4096, logprobs=True, top_logprobs=20)
            await g.client.post("/v1/chat/completions", json=body, headers=auth())
            first = upstream.stats.last_body
            r = await g.client.post("/v1/chat/completions", json=body, headers=auth())
            return first, upstream.stats.last_body, r, g.records()

    first, second, r, recs = run(go())
    assert first["n"] == 8 and first["logprobs"] is True
    assert second["n"] == 1 and second["max_tokens"] == 64 and "logprobs" not in second and "top_logprobs" not in second
    assert r.status_code == 200 and len(r.json()["choices"]) == 1
    assert recs[1]["request"]["n"] == 8  # the log keeps what the client sent


def test_shadow_mode_never_refuses(make_gw):
    async def go():
        async with make_gw({"mode": "shadow", "rules": [{"flagged": True, "action": "block"}],
                            "quotas": {"key": {"requests_per_minute": 1}}}, detector=FlagAfterK(k=1)) as g:
            codes = [(await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())).status_code
                     for _ in range(3)]
            return codes, g.records()

    codes, recs = run(go())
    assert codes == [200, 200, 200]
    assert recs[2]["distillguard"]["action"] == "block" and recs[2]["distillguard"]["enforced"] is False


def test_key_quota_exact(make_gw):
    async def go():
        async with make_gw({"quotas": {"key": {"requests_per_minute": 4}}}) as g:
            rs = await asyncio.gather(*[g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
                                        for _ in range(10)])
            return rs

    rs = run(go())
    codes = sorted(r.status_code for r in rs)
    assert codes == [200] * 4 + [429] * 6
    refused = [r for r in rs if r.status_code == 429][0]
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "quota_exceeded"


def test_token_quota(make_gw):
    async def go():
        async with make_gw({"quotas": {"account": {"tokens_per_day": 25}}}) as g:
            # each fake answer costs 10 tokens: 3 fit (0, 10, 20 < 25), the 4th is refused
            return [(await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())).status_code
                    for _ in range(4)]

    assert run(go()) == [200, 200, 200, 429]


def test_cluster_quota_from_payment_fingerprint(make_gw):
    accounts = {"hydra1": {"account_id": "hydra1", "payment_fingerprint": "card-x"},
                "hydra2": {"account_id": "hydra2", "payment_fingerprint": "card-x"},
                "alice": {"account_id": "alice", "payment_fingerprint": "card-a"}}

    async def go():
        async with make_gw({"quotas": {"key": {"requests_per_minute": 5}, "cluster": {"requests_per_minute": 6}}},
                           accounts=accounts) as g:
            codes = []
            for i in range(10):  # alternate the two linked accounts: each is under its own key limit
                r = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(2 + i % 2))
                codes.append(r.status_code)
            alice = [(await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(0))).status_code
                     for _ in range(5)]
            return codes, alice, g.records()

    codes, alice, recs = run(go())
    assert codes.count(200) == 6  # one allowance for the pair, not 2 x 5
    assert alice == [200] * 5
    assert recs[0]["distillguard"]["cluster_id"].startswith("pay-")


def test_detector_cluster_flag_reaches_fresh_accounts(make_gw):
    """The detector flags hydra1 with cluster c-hydra; hydra2 (same cluster) is refused on its first request."""

    async def go():
        async with make_gw({"rules": [{"flagged": True, "action": "block"}]}, detector=FlagAfterK(k=2)) as g:
            for _ in range(2):
                await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(2))
            # hydra2 has been seen once (its verdict carries the cluster) before the cluster's flag applies
            first = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(3))
            second = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(3))
            return first.status_code, second.status_code

    assert run(go()) == (200, 403)


def test_allowlist_bypasses_rules_and_quotas(make_gw):
    async def go():
        async with make_gw({"rules": [{"flagged": True, "action": "block"}], "allowlist": {"accounts": ["bigco"]},
                            "quotas": {"key": {"requests_per_minute": 1}}}, detector=FlagAfterK(k=1)) as g:
            return [(await g.client.post("/v1/chat/completions", json=CHAT, headers=auth(4))).status_code
                    for _ in range(4)]

    assert run(go()) == [200] * 4


def test_metrics_and_healthz(make_gw):
    async def go():
        async with make_gw() as g:
            await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            await g.client.post("/v1/chat/completions", json=CHAT)
            h = await g.client.get("/healthz")
            m = await g.client.get("/metrics")
            return h, m

    h, m = run(go())
    assert h.status_code == 200 and h.json()["status"] == "ok"
    text = m.text
    assert 'distillguard_requests_total{endpoint="/v1/chat/completions",status="200"} 1' in text
    assert 'distillguard_refused_total{reason="auth"} 1' in text
    assert "distillguard_request_latency_ms_count 2" in text
    for k in KEYS:
        assert k["api_key"] not in text


def test_record_from_gateway_roundtrips_orjson(make_gw):
    """Every line written is one JSON object (even with odd unicode in the request)."""

    async def go():
        async with make_gw() as g:
            body = {"model": "m", "messages": [{"role": "user", "content": "\u2028 ünï 😀 \n"}]}
            await g.client.post("/v1/chat/completions", content=orjson.dumps(body),
                                headers=dict(auth(), **{"content-type": "application/json"}))
            g.gw.sink.flush()
            return list(g.gw.sink.log_dir.glob("*.jsonl"))[0].read_bytes()

    data = run(go())
    lines = data.splitlines()
    assert len(lines) == 1 and orjson.loads(lines[0])["request"]["messages"][0]["content"].startswith("\u2028")
