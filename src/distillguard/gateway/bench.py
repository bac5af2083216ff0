"""``distillguard bench gateway``: the latency the gateway adds, side by side with a LiteLLM proxy.

Three processes on this machine: a fast fake upstream (raw asyncio), the proxy under test (the
gateway with logging and the online detector on, or a LiteLLM proxy with the same upstream), and
this process as an open-loop load generator (raw asyncio HTTP/1.1 over keep-alive connections,
uvloop). Each phase sends requests at a fixed rate for a fixed time after a warm-up; the latency of a
request is from just before its bytes are written to its last byte read. Added latency = percentile
through the proxy minus the same percentile calling the upstream directly, measured in the same run.

The optional hydra phase measures how many requests a many-account campaign gets served through the
gateway (cluster quotas + online detector) against per-key limits alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson
import typer

__all__ = ["LoadResult", "bench_gateway_command", "run_load"]

BODY = orjson.dumps({"model": "fake", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16})


@dataclass
class LoadResult:
    target: str
    rate: float
    sent: int
    ok: int
    errors: int
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class _Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.r: asyncio.StreamReader | None = None
        self.w: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.w is None:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)
            self.w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        assert self.r is not None
        self.w.write(raw)
        head = await self.r.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        low = head.lower()
        i = low.find(b"content-length:")
        if i >= 0:
            n = int(low[i + 15 : low.find(b"\r\n", i)])
            await self.r.readexactly(n)
        elif b"transfer-encoding: chunked" in low:
            while True:
                size = int((await self.r.readuntil(b"\r\n")).strip(), 16)
                await self.r.readexactly(size + 2)
                if size == 0:
                    break
        if b"connection: close" in low:
            self.close()
        return status

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
        self.r = self.w = None


async def _load(host: str, port: int, raw: bytes, rate: float, duration: float, warmup: float,
                workers: int) -> tuple[list[float], int, int, float]:
    lat: list[float] = []
    counters = {"i": 0, "ok": 0, "err": 0}
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05
    total = int(rate * (warmup + duration))
    n_warm = int(rate * warmup)

    async def worker() -> None:
        conn = _Conn(host, port)
        while True:
            i = counters["i"]
            if i >= total:
                break
            counters["i"] += 1
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            s = time.perf_counter()
            try:
                status = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
                status = 0
            e = time.perf_counter()
            if i >= n_warm:
                lat.append((e - s) * 1000)
                counters["ok" if status == 200 else "err"] += 1
        conn.close()

    start = loop.time()
    await asyncio.gather(*[worker() for _ in range(workers)])
    elapsed = loop.time() - start - warmup
    return lat, counters["ok"], counters["err"], elapsed


def run_load(target: str, url: str, *, rate: float, duration: float, warmup: float = 1.0, workers: int = 64,
             api_key: str = "sk-bench") -> LoadResult:
    """Open-loop load at ``rate`` requests/s on ``url``/v1/chat/completions; latency percentiles."""
    import numpy as np

    hostport = url.split("://", 1)[1].rstrip("/")
    host, port = hostport.rsplit(":", 1)
    raw = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
           b"Content-Type: application/json\r\nUser-Agent: distillguard-bench/1\r\nContent-Length: %d\r\n\r\n"
           % (hostport.encode(), api_key.encode(), len(BODY))) + BODY
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    lat, ok, err, elapsed = runner(_load(host, int(port), raw, rate, duration, warmup, workers))
    a = np.asarray(lat) if lat else np.asarray([float("nan")])
    p50, p90, p99 = (float(x) for x in np.percentile(a, [50, 90, 99]))
    return LoadResult(target, rate, len(lat), ok, err, round(len(lat) / max(elapsed, 1e-9), 1), round(p50, 3),
                      round(p90, 3), round(p99, 3), round(float(a.max()), 3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


@contextlib.contextmanager
def _proc(cmd: list[str], port: int, what: str, env: dict | None = None, timeout: float = 60,
          cwd: str | None = None) -> Iterator[subprocess.Popen]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        try:
            _wait_port(port, proc, timeout, what)
        except RuntimeError:
            log.seek(0)
            tail = log.read()[-2000:].decode("utf-8", "replace")
            raise RuntimeError(f"{what} failed to start: {tail}") from None
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def find_litellm(explicit: str | None = None) -> str | None:
    """The ``litellm`` proxy executable: the option, $DISTILLGUARD_LITELLM_BIN, this venv, or PATH."""
    cands = [explicit, os.environ.get("DISTILLGUARD_LITELLM_BIN"), str(Path(sys.executable).parent / "litellm"),
             str(Path(sys.prefix) / "litellm-venv" / "bin" / "litellm"), shutil.which("litellm")]
    for c in cands:
        if c and Path(c).exists():
            return c
    return None


def litellm_env() -> dict[str, str]:
    return dict(os.environ, LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY="true",
                LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", DISABLE_SCHEMA_UPDATE="true")


def litellm_config(path: Path, upstream: str, callbacks: str | None = None) -> Path:
    lines = ["model_list:", "  - model_name: fake", "    litellm_params:", "      model: openai/fake",
             f"      api_base: {upstream}/v1", "      api_key: sk-upstream",
             "litellm_settings:", "  telemetry: false", "  drop_params: true"]
    if callbacks:
        lines.append(f"  callbacks: {callbacks}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _row(r: LoadResult, base: LoadResult | None) -> str:
    add = f"{r.p50_ms - base.p50_ms:+8.3f} {r.p99_ms - base.p99_ms:+8.3f}" if base else f"{'-':>8} {'-':>8}"
    return (f"{r.target:<10} {r.rate:>7.0f} {r.achieved_rps:>9.1f} {r.ok:>7} {r.errors:>6} {r.p50_ms:>8.3f} "
            f"{r.p99_ms:>8.3f} {add}")


def bench_gateway_command(
    rate: int = typer.Option(1000, help="Requests per second for the direct-vs-gateway phase."),
    duration: float = typer.Option(10.0, help="Seconds measured per phase (after a 1 s warm-up)."),
    compare_rate: int = typer.Option(100, help="Requests per second of the three-way phase with LiteLLM "
                                              "(LiteLLM cannot sustain --rate on 2 cores)."),
    litellm: bool = typer.Option(True, help="Include a LiteLLM proxy with the same upstream."),
    litellm_bin: str = typer.Option(None, help="Path of the litellm executable (default: found automatically)."),
    hydra: bool = typer.Option(True, help="Also measure a simulated hydra campaign: served before throttled."),
    out: Path = typer.Option(None, help="Write results.json here (a folder)."),
    workers: int = typer.Option(64, help="Concurrent keep-alive connections of the load generator."),
    gateway_workers: int = typer.Option(1, min=1, help="Gateway processes (--workers); above 1 a redis-server is "
                                                       "started for their shared state."),
) -> None:
    """Measure requests/s and added latency (p50, p99) of the gateway and of LiteLLM over the upstream.

    Example:

        distillguard bench gateway --rate 1000 --duration 10 --out bench-out/gateway
    """
    from rich.console import Console

    con = Console(stderr=True)
    tmp = Path(tempfile.mkdtemp(prefix="dg-bench-"))
    py = sys.executable
    src = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    keys = tmp / "keys.jsonl"
    keys.write_bytes(orjson.dumps({"api_key": "sk-bench", "account_id": "bench", "api_key_id": "k-bench"}) + b"\n")
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                           "loadavg_start": [round(x, 2) for x in os.getloadavg()]}, "phases": []}
    up_port, gw_port, ll_port = _free_port(), _free_port(), _free_port()
    up_url = f"http://127.0.0.1:{up_port}"
    header = (f"{'target':<10} {'rate':>7} {'req/s':>9} {'ok':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'+p50 ms':>8} {'+p99 ms':>8}")
    lines = [header]
    results["gateway_processes"] = gateway_workers
    with contextlib.ExitStack() as stack:
        stack.enter_context(_proc([py, "-m", "distillguard.gateway.fakeupstream", str(up_port)], up_port,
                                  "fake upstream", env=env))
        gw_cmd = [py, "-m", "distillguard.cli", "gateway", "--upstream", up_url, "--keys", str(keys), "--log-dir",
                  str(tmp / "logs"), "--port", str(gw_port)]
        if gateway_workers > 1:
            exe = shutil.which("redis-server") or "/usr/bin/redis-server"
            if not Path(exe).exists():
                raise typer.BadParameter("--gateway-workers above 1 needs redis-server on PATH")
            r_port = _free_port()
            stack.enter_context(_proc([exe, "--port", str(r_port), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no"], r_port, "redis-server"))
            gw_cmd += ["--workers", str(gateway_workers), "--redis", f"redis://127.0.0.1:{r_port}/0"]
        with _proc(gw_cmd, gw_port, "gateway", env=env):
            gw_url = f"http://127.0.0.1:{gw_port}"
            con.print(f"phase 1: direct vs gateway at {rate} req/s for {duration} s each")
            d = run_load("direct", up_url, rate=rate, duration=duration, workers=workers)
            g = run_load("gateway", gw_url, rate=rate, duration=duration, workers=workers)
            lines += [_row(d, None), _row(g, d)]
            results["phases"].append({"rate": rate, "direct": d.as_dict(), "gateway": g.as_dict(),
                                      "gateway_added_p50_ms": round(g.p50_ms - d.p50_ms, 3),
                                      "gateway_added_p99_ms": round(g.p99_ms - d.p99_ms, 3)})
            logged = sum(1 for p in (tmp / "logs").glob("*.jsonl") for _ in open(p, "rb"))
            results["gateway_records_logged_so_far"] = logged
            phase2: dict[str, Any] = {"rate": compare_rate}
            if litellm:
                exe = find_litellm(litellm_bin)
                if exe is None:
                    con.print("LiteLLM not found (pip install 'litellm[proxy]' or --litellm-bin); skipping it")
                else:
                    cfg = litellm_config(tmp / "litellm.yaml", up_url)
                    con.print(f"phase 2: direct vs gateway vs LiteLLM at {compare_rate} req/s (starting LiteLLM)")
                    with _proc([exe, "--config", str(cfg), "--host", "127.0.0.1", "--port", str(ll_port),
                                "--num_workers", "1"], ll_port, "litellm", env=litellm_env(), timeout=120, cwd=str(tmp)):
                        run_load("warm", f"http://127.0.0.1:{ll_port}", rate=20, duration=1, workers=4)
                        d2 = run_load("direct", up_url, rate=compare_rate, duration=duration, workers=workers)
                        g2 = run_load("gateway", gw_url, rate=compare_rate, duration=duration, workers=workers)
                        l2 = run_load("litellm", f"http://127.0.0.1:{ll_port}", rate=compare_rate, duration=duration,
                                      workers=workers)
                    lines += [_row(d2, None), _row(g2, d2), _row(l2, d2)]
                    ga50, ga99 = g2.p50_ms - d2.p50_ms, g2.p99_ms - d2.p99_ms
                    la50, la99 = l2.p50_ms - d2.p50_ms, l2.p99_ms - d2.p99_ms
                    phase2.update(direct=d2.as_dict(), gateway=g2.as_dict(), litellm=l2.as_dict(),
                                  gateway_added_p50_ms=round(ga50, 3), gateway_added_p99_ms=round(ga99, 3),
                                  litellm_added_p50_ms=round(la50, 3), litellm_added_p99_ms=round(la99, 3),
                                  ratio_p50=round(la50 / max(ga50, 1e-3), 1), ratio_p99=round(la99 / max(ga99, 1e-3), 1))
                    results["phases"].append(phase2)
    if hydra:
        from distillguard.gateway.hydra import run_hydra

        con.print("hydra: simulated campaign through per-key limits alone vs the gateway")
        results["hydra"] = run_hydra(seed=1)
    shutil.rmtree(tmp, ignore_errors=True)
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print("\n".join(lines))
    print(f"load average (1, 5, 15 min): start {results['machine']['loadavg_start']}, end "
          f"{results['machine']['loadavg_end']} on {os.cpu_count()} CPUs (other jobs inflate the tails)")
    for ph in results["phases"]:
        if "litellm_added_p50_ms" in ph:
            print(f"added latency at {ph['rate']} req/s: gateway p50 {ph['gateway_added_p50_ms']:.3f} ms / p99 "
                  f"{ph['gateway_added_p99_ms']:.3f} ms; LiteLLM p50 {ph['litellm_added_p50_ms']:.3f} ms / p99 "
                  f"{ph['litellm_added_p99_ms']:.3f} ms; LiteLLM adds {ph['ratio_p50']}x (p50), {ph['ratio_p99']}x (p99)")
    if "hydra" in results:
        h = results["hydra"]
        print(f"hydra campaign ({h['accounts']} accounts, {h['requests']} requests): per-key limits alone served "
              f"{h['served_per_key_only']}; cluster quotas without the detector {h['served_cluster_quota_no_detector']};"
              f" the gateway served {h['served_gateway']} ({h['gateway_rule']}); benign requests refused: "
              f"{h['benign_refused_gateway']}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print(f"wrote {out / 'results.json'}")
