"""Shared state through a real redis-server: exact quotas across two gateway processes, shared flags,
fail-open / fail-closed when Redis goes away."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from gwhelpers import CHAT, FlagAfterK, auth, gateway_process, gateway_processes

from distillguard.gateway.state import RedisState


def _policy(tmp_path, text: str):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.slow
def test_quota_of_n_admits_exactly_n_across_two_gateways(upstream, keys_file, tmp_path, redis_server):
    url, _, _ = redis_server
    ns = "t" + uuid.uuid4().hex[:8]
    pol = _policy(tmp_path, "quotas:\n  account: {requests_per_day: 25}\n")
    common = ["--upstream", upstream.url, "--keys", str(keys_file), "--config", pol, "--redis", url,
              "--redis-namespace", ns, "--detector", "gwhelpers:NullDetector"]
    with gateway_processes([*common, "--log-dir", str(tmp_path / "a")],
                           [*common, "--log-dir", str(tmp_path / "b")]) as ((a, _), (b, _)):

        async def fire():
            async with httpx.AsyncClient(timeout=20) as c:
                # 10 one after the other, alternating (both gateways admit some), then 70 at once
                first = [await c.post(f"{(a, b)[i % 2]}/v1/chat/completions", json=CHAT, headers=auth(0))
                         for i in range(10)]
                return first + list(await asyncio.gather(*[c.post(f"{(a, b)[i % 2]}/v1/chat/completions", json=CHAT,
                                                                  headers=auth(0)) for i in range(10, 80)]))

        rs = asyncio.run(fire())
        # the other account has its own allowance
        other = httpx.post(f"{b}/v1/chat/completions", json=CHAT, headers=auth(1))
    codes = [r.status_code for r in rs]
    assert codes.count(200) == 25 and codes.count(429) == 55
    served_by = {(a, b)[i % 2] for i, r in enumerate(rs) if r.status_code == 200}
    assert len(served_by) == 2  # both processes admitted some
    assert other.status_code == 200


@pytest.mark.slow
def test_flags_shared_across_gateways(upstream, keys_file, tmp_path, redis_server):
    url, _, _ = redis_server
    ns = "t" + uuid.uuid4().hex[:8]
    pol = _policy(tmp_path, "rules:\n  - {flagged: true, action: block}\n")
    common = ["--upstream", upstream.url, "--keys", str(keys_file), "--config", pol, "--redis", url,
              "--redis-namespace", ns, "--detector", "gwhelpers:FlagAfterK"]
    env = {"DG_TEST_FLAG_AFTER": "2", "DISTILLGUARD_ADMIN_TOKEN": "adm-secret-1"}
    with gateway_processes([*common, "--log-dir", str(tmp_path / "a")], [*common, "--log-dir", str(tmp_path / "b")],
                           env=env) as ((a, _), (b, _)):
        # the detector in gateway A flags hydra1 at its 2nd request (cluster c-hydra)
        first = [httpx.post(f"{a}/v1/chat/completions", json=CHAT, headers=auth(2)).status_code for _ in range(2)]
        # detection runs after the answer, off the request path: wait until A has stored the verdict
        adm = {"Authorization": "Bearer adm-secret-1"}
        for _ in range(200):
            flags = httpx.get(f"{a}/admin/flags", headers=adm).json()["flags"]
            if any(f["id"] == "hydra1" and f["flagged"] for f in flags):
                break
            time.sleep(0.02)
        # gateway B has never seen hydra1 but refuses it: the flag lives in Redis
        on_b = httpx.post(f"{b}/v1/chat/completions", json=CHAT, headers=auth(2)).status_code
        # hydra2 shares the cluster: after one request (which tells B its cluster), it is refused too
        h2 = [httpx.post(f"{b}/v1/chat/completions", json=CHAT, headers=auth(3)).status_code for _ in range(2)]
        alice = httpx.post(f"{b}/v1/chat/completions", json=CHAT, headers=auth(0)).status_code
    assert first == [200, 200] and on_b == 403
    assert h2 == [200, 403] and alice == 200


@pytest.mark.parametrize("fail_mode,expected", [("open", 200), ("closed", 503)])
def test_redis_down_fail_open_or_closed(make_gw, redis_server, fail_mode, expected):
    url, _, proc = redis_server
    state = RedisState(url=url, namespace="t" + uuid.uuid4().hex[:8], timeout_s=0.3)

    async def go():
        async with make_gw({"fail_mode": fail_mode, "quotas": {"key": {"requests_per_minute": 100}}},
                           state=state, detector=FlagAfterK(k=1000)) as g:
            up = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            proc.terminate()
            proc.wait(5)
            down = await g.client.post("/v1/chat/completions", json=CHAT, headers=auth())
            health = await g.client.get("/healthz")
            metrics = (await g.client.get("/metrics")).text
            return up, down, health, metrics, g.records()

    up, down, health, metrics, recs = asyncio.run(go())
    assert up.status_code == 200 and down.status_code == expected
    assert f'distillguard_state_errors_total{{fail_mode="{fail_mode}"}}' in metrics
    assert health.json()["state_ok"] is False
    assert health.status_code == (200 if fail_mode == "open" else 503)
    assert [r["status_code"] for r in recs] == [200, expected]
    if fail_mode == "closed":
        assert down.json()["error"]["code"] == "state_unavailable" and down.headers["retry-after"] == "5"


@pytest.mark.slow
def test_admin_keys_shared_across_gateways(upstream, keys_file, tmp_path, redis_server):
    url, _, _ = redis_server
    common = ["--upstream", upstream.url, "--keys", str(keys_file), "--redis", url, "--redis-namespace",
              "t" + uuid.uuid4().hex[:8], "--detector", "gwhelpers:NullDetector"]
    env = {"DISTILLGUARD_ADMIN_TOKEN": "adm-secret-2"}
    adm = {"Authorization": "Bearer adm-secret-2"}

    def poll(base, headers, want):
        for _ in range(300):
            code = httpx.post(f"{base}/v1/chat/completions", json=CHAT, headers=headers).status_code
            if code == want:
                return code
            time.sleep(0.02)
        return code

    with gateway_processes([*common, "--log-dir", str(tmp_path / "a")], [*common, "--log-dir", str(tmp_path / "b")],
                           env=env) as ((a, _), (b, _)):
        new = httpx.post(f"{a}/admin/keys", json={"account_id": "carol", "api_key_id": "k-carol"}, headers=adm).json()
        carol = {"Authorization": "Bearer " + new["api_key"]}
        on_b = poll(b, carol, 200)  # B learns the key from Redis (by hash) within its sync interval
        assert httpx.delete(f"{a}/admin/keys/k-alice", headers=adm).status_code == 200
        alice_on_b = poll(b, auth(0), 401)  # and the revocation
        bob_on_b = httpx.post(f"{b}/v1/chat/completions", json=CHAT, headers=auth(1)).status_code
    assert on_b == 200 and alice_on_b == 401 and bob_on_b == 200


@pytest.mark.slow
def test_workers_share_one_port_and_quota(upstream, keys_file, tmp_path, redis_server):
    """``--workers 2``: two processes on one port (SO_REUSEPORT), one quota through Redis, logs from both."""
    import os
    import signal

    from gwhelpers import read_records

    url, _, _ = redis_server
    pol = _policy(tmp_path, "quotas:\n  account: {requests_per_day: 30}\n")
    logs = tmp_path / "logs"
    with gateway_process("--upstream", upstream.url, "--keys", str(keys_file), "--config", pol, "--redis", url,
                         "--redis-namespace", "t" + uuid.uuid4().hex[:8], "--detector", "gwhelpers:NullDetector",
                         "--log-dir", str(logs), "--workers", "2") as (gw, proc):

        async def fire():
            # separate connections (no keep-alive), so the kernel spreads them over both processes
            limits = httpx.Limits(max_keepalive_connections=0)
            async with httpx.AsyncClient(timeout=20, limits=limits) as c:
                return await asyncio.gather(*[c.post(f"{gw}/v1/chat/completions", json=CHAT, headers=auth(0))
                                              for _ in range(60)])

        codes = [r.status_code for r in asyncio.run(fire())]
        proc.send_signal(signal.SIGTERM)  # the parent stops both workers, which flush their logs
        proc.wait(20)
    assert codes.count(200) == 30 and codes.count(429) == 30
    recs = read_records(logs)
    assert len(recs) == 60
    pids = {p.name.split("-")[2] for p in logs.glob("traffic-*.jsonl*")}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # both worker processes served and logged


def test_workers_need_redis(keys_file, tmp_path):
    import os
    import subprocess
    import sys

    from gwhelpers import REPO

    r = subprocess.run([sys.executable, "-m", "distillguard.cli", "gateway", "--upstream", "http://127.0.0.1:9",
                        "--keys", str(keys_file), "--log-dir", str(tmp_path / "l"), "--workers", "2"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")), cwd=REPO,
                       timeout=60)
    assert r.returncode == 2 and "--redis" in r.stderr
