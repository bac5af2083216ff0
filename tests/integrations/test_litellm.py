"""The LiteLLM plugin: its hooks driven directly, then inside a real ``litellm`` proxy process."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from distillguard.gateway.bench import find_litellm, litellm_config, litellm_env
from distillguard.gateway.fakeupstream import FakeUpstream
from distillguard.gateway.policy import Policy
from distillguard.integrations.litellm import DistillguardLiteLLM
from distillguard.schema import event_from_record

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from dg_test_detector import FlagAfterK  # noqa: E402

USER = {"team_id": "team-x", "token": "hashed-token-abc"}
BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "n": 4, "logprobs": True, "top_logprobs": 5}


def records(d: Path) -> list[dict]:
    out = []
    for p in sorted(d.glob("*.jsonl*")):
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        out += [orjson.loads(x) for x in data.splitlines() if x.strip()]
    return out


def test_hooks_log_detect_and_refuse(tmp_path):
    h = DistillguardLiteLLM(log_dir=str(tmp_path), detector=FlagAfterK(k=2),
                            policy=Policy.from_dict({"rules": [{"flagged": True, "action": "block"}],
                                                     "watermark_key_id": {"fake": "wk-fake", "*": "wk-other"}}))

    async def go():
        outcomes = []
        for i in range(3):
            data = dict(BODY, litellm_call_id=f"c{i}")
            try:
                await h.async_pre_call_hook(USER, None, data, "acompletion")
            except Exception as e:  # noqa: BLE001
                outcomes.append(getattr(e, "status_code", None))
                continue
            resp = {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message":
                    {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
            await h.async_log_success_event({"litellm_call_id": f"c{i}"}, resp, None, None)
            outcomes.append(200)
        return outcomes

    outcomes = asyncio.run(go())
    h.close()
    recs = records(tmp_path)
    assert outcomes == [200, 200, 403]
    assert [r["status_code"] for r in recs] == [200, 200, 403]
    # answered calls carry the upstream's watermark key id; the refused one never reached it
    assert [r.get("watermark_key_id") for r in recs] == ["wk-fake", "wk-fake", None]
    assert recs[0]["account_id"] == "team-x" and recs[0]["request"]["n"] == 4
    assert event_from_record(recs[0])["response_text"] == "yo"
    assert "hashed-token-abc" not in str(recs)


def test_hooks_quota_degrade_and_failure(tmp_path):
    h = DistillguardLiteLLM(log_dir=str(tmp_path), detector=FlagAfterK(k=1), policy=Policy.from_dict({
        "quotas": {"account": {"requests_per_day": 2}},
        "rules": [{"flagged": True, "action": "cap", "max_n": 1, "max_tokens": 32, "strip_logprobs": True}]}))

    async def go():
        d1 = dict(BODY, litellm_call_id="a")
        await h.async_pre_call_hook(USER, None, d1, "acompletion")
        await h.async_log_failure_event({"litellm_call_id": "a", "exception": type("E", (Exception,), {"status_code": 502})()},
                                        None, None, None)
        d2 = dict(BODY, litellm_call_id="b")
        await h.async_pre_call_hook(USER, None, d2, "acompletion")
        try:
            await h.async_pre_call_hook(USER, None, dict(BODY, litellm_call_id="c"), "acompletion")
        except Exception as e:  # noqa: BLE001
            return d1, d2, e
        return d1, d2, None

    d1, d2, exc = asyncio.run(go())
    h.close()
    assert d1["n"] == 4 and d1["logprobs"] is True  # not flagged yet
    assert d2["n"] == 1 and d2["max_tokens"] == 32 and "logprobs" not in d2 and "top_logprobs" not in d2
    assert exc is not None and exc.status_code == 429 and exc.headers["Retry-After"]
    assert [r["status_code"] for r in records(tmp_path)] == [502, 429]


@pytest.mark.slow
def test_real_litellm_proxy(tmp_path):
    exe = find_litellm()
    if exe is None:
        pytest.skip("the litellm proxy is not installed (pip install 'litellm[proxy]', or set DISTILLGUARD_LITELLM_BIN)")
    up = FakeUpstream().start()
    (tmp_path / "policy.yaml").write_text("rules:\n  - {flagged: true, action: block}\n")
    cfg = litellm_config(tmp_path / "config.yaml", up.url, callbacks="distillguard.integrations.litellm.proxy_handler")
    env = litellm_env()
    env.update(DISTILLGUARD_LOG_DIR=str(tmp_path / "logs"), DISTILLGUARD_POLICY=str(tmp_path / "policy.yaml"),
               DISTILLGUARD_DETECTOR="dg_test_detector:FlagAfterK", DG_TEST_FLAG_AFTER="3",
               PYTHONPATH=f"{HERE}{os.pathsep}{REPO / 'src'}", LITELLM_MASTER_KEY="sk-master-test")
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            try:
                httpx.get(base + "/health/liveliness", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "litellm did not start in 180 s"
                time.sleep(0.2)
        h = {"Authorization": "Bearer sk-master-test"}
        body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=base, headers=h, timeout=60) as c:
            a = c.post("/v1/chat/completions", json=body)
            with c.stream("POST", "/v1/chat/completions", json=dict(body, stream=True)) as s:
                streamed = s.read().decode()
            b = c.post("/v1/chat/completions", json=body)
            before = up.stats.requests
            refused = c.post("/v1/chat/completions", json=body)
            upstream_calls = up.stats.requests - before
        time.sleep(0.6)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        up.stop()
    assert a.status_code == 200 and b.status_code == 200 and "w0 " in streamed
    assert refused.status_code == 403 and "blocked" in refused.text
    assert upstream_calls == 0  # the refused call never reached the upstream
    recs = records(tmp_path / "logs")
    assert [r["status_code"] for r in recs] == [200, 200, 200, 403]
    assert recs[1]["request"].get("stream") is True and "_litellm_strip_stream_usage" not in recs[1]["request"]
    assert recs[1]["response"]["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4 "
    assert all(event_from_record(r)["account_id"] == recs[0]["account_id"] for r in recs)
    assert "sk-master-test" not in str(recs)
