"""Helpers for the gateway tests (imported by conftest and the tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from distillguard.detect.online import OnlineDetector, Verdict
from distillguard.gateway.app import Gateway
from distillguard.gateway.fakeupstream import FakeUpstream
from distillguard.gateway.keys import KeyStore
from distillguard.gateway.policy import Policy

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PY = sys.executable
KEYS = [
    {"api_key": "sk-alice-secret-0001", "account_id": "alice", "api_key_id": "k-alice"},
    {"api_key": "sk-bob-secret-0002", "account_id": "bob", "api_key_id": "k-bob"},
    {"api_key": "sk-hydra1-secret-003", "account_id": "hydra1", "api_key_id": "k-h1"},
    {"api_key": "sk-hydra2-secret-004", "account_id": "hydra2", "api_key_id": "k-h2"},
    {"api_key": "sk-big-secret-000005", "account_id": "bigco", "api_key_id": "k-big"},
]
ALL_SECRETS = [k["api_key"] for k in KEYS]


def auth(i: int = 0) -> dict[str, str]:
    return {"Authorization": "Bearer " + KEYS[i]["api_key"]}


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}


class FlagAfterK(OnlineDetector):
    """Test detector: flags an account from its K-th request on (deterministic)."""

    K = 3

    def __init__(self, *, accounts: dict | None = None, k: int | None = None):
        super().__init__(accounts=accounts)
        self.k = k or int(os.environ.get("DG_TEST_FLAG_AFTER", self.K))
        self.seen: dict[str, int] = {}
        self.events: list[dict] = []

    def process(self, event: dict) -> Verdict:
        self.events.append(event)
        aid = event["account_id"]
        self.seen[aid] = self.seen.get(aid, 0) + 1
        flagged = self.seen[aid] >= self.k
        cid = "c-hydra" if aid.startswith("hydra") else None
        return Verdict(account_id=aid, score=0.99 if flagged else 0.0, flagged=flagged, cluster_id=cid,
                       reasons=[{"signal": "test", "value": self.seen[aid], "detail": "k requests"}] if flagged else [])


def read_records(log_dir: Path) -> list[dict]:
    import gzip

    out = []
    for p in sorted(Path(log_dir).glob("*.jsonl*")):
        data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
        out += [orjson.loads(line) for line in data.splitlines() if line.strip()]
    return out


class NullDetector(FlagAfterK):
    """Never flags (isolates quota tests from the real detector's linkage and CPU)."""

    def __init__(self, *, accounts: dict | None = None):
        super().__init__(accounts=accounts, k=10**9)

    def process(self, event: dict) -> Verdict:
        return Verdict(account_id=event["account_id"], score=0.0, flagged=False)


class InProcess:
    """A Gateway served through httpx.ASGITransport."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self._cm = None
        self.client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> "InProcess":
        self._cm = self.gw.lifespan_context()
        await self._cm.__aenter__()
        async def drain(_response: httpx.Response) -> None:
            await self.gw.drain()  # detection runs off the request path; tests wait for its verdicts

        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.gw.app, client=("10.1.2.3", 5555)),
                                        base_url="http://gw", event_hooks={"response": [drain]})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.client is not None and self._cm is not None
        await self.client.aclose()
        await self._cm.__aexit__(*exc)

    def records(self) -> list[dict]:
        self.gw.sink.flush()
        return read_records(self.gw.sink.log_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def gateway_process(*args: str, env: dict | None = None, port: int | None = None):
    """``distillguard gateway ...`` as a real process on a free port; yields (base_url, Popen)."""
    with gateway_processes(list(args), env=env, ports=[port] if port else None) as both:
        yield both[0]


@contextlib.contextmanager
def gateway_processes(*arglists: list[str], env: dict | None = None, ports: list[int] | None = None):
    """Several ``distillguard gateway`` processes, started together (their start-up overlaps);
    yields [(base_url, Popen), ...]."""
    e = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{HERE}")
    e.update(env or {})
    out = []
    try:
        for i, args in enumerate(arglists):
            port = ports[i] if ports else free_port()
            proc = subprocess.Popen([PY, "-m", "distillguard.cli", "gateway", "--port", str(port), *args], env=e,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
            out.append((f"http://127.0.0.1:{port}", proc))
        for url, proc in out:
            wait_http(url + "/healthz", proc=proc)
        yield out
    finally:
        for _, proc in out:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in out:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
