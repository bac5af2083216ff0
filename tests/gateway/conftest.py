"""Fixtures for the gateway tests: a fake upstream, key files, in-process gateways, redis-server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gwhelpers import KEYS, InProcess, NullDetector, free_port  # noqa: E402

from distillguard.gateway.app import Gateway  # noqa: E402
from distillguard.gateway.fakeupstream import FakeUpstream  # noqa: E402
from distillguard.gateway.keys import KeyStore  # noqa: E402
from distillguard.gateway.policy import Policy  # noqa: E402


@pytest.fixture(scope="session")
def upstream():
    up = FakeUpstream().start()
    yield up
    up.stop()


@pytest.fixture()
def keystore() -> KeyStore:
    ks = KeyStore()
    for k in KEYS:
        ks.add(**k)
    return ks


@pytest.fixture()
def keys_file(tmp_path) -> Path:
    p = tmp_path / "keys.jsonl"
    p.write_bytes(b"".join(orjson.dumps(k) + b"\n" for k in KEYS))
    return p


@pytest.fixture()
def make_gw(upstream, keystore, tmp_path):
    def make(policy: dict | None = None, **kw: Any) -> InProcess:
        kw.setdefault("upstream", upstream.url)
        kw.setdefault("keys", keystore)
        kw.setdefault("log_dir", tmp_path / "logs")
        kw.setdefault("detector", NullDetector())
        gw = Gateway(policy=Policy.from_dict(policy or {}), **kw)
        return InProcess(gw)

    return make


@pytest.fixture()
def redis_server(tmp_path):
    """A real redis-server on a free port; yields (url, port, Popen)."""
    exe = "/usr/bin/redis-server"
    if not Path(exe).exists():
        pytest.skip("redis-server binary not found at /usr/bin/redis-server (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis as redis_lib

    r = redis_lib.Redis(port=port)
    for _ in range(100):
        try:
            r.ping()
            break
        except redis_lib.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0", port, proc
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)
