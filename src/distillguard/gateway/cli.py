"""``distillguard gateway``: run the enforcing OpenAI-compatible proxy (contracts.md §4)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from distillguard.errors import DistillguardError


def build_gateway(*, upstream: str, keys: Path, log_dir: Path, config: Path | None = None, redis: str | None = None,
                  accounts: Path | None = None, detector: str | None = None, flush_interval_ms: float = 200,
                  trust_forwarded_for: bool = False, redis_namespace: str = "distillguard",
                  detector_thread: bool = False) -> Any:
    from distillguard.gateway.app import Gateway, load_accounts, load_detector
    from distillguard.gateway.keys import KeyStore
    from distillguard.gateway.policy import load_policy
    from distillguard.gateway.state import make_state

    accts = load_accounts(accounts)
    return Gateway(
        upstream=upstream, keys=KeyStore.from_jsonl(keys), log_dir=log_dir, policy=load_policy(config),
        state=make_state(redis, namespace=redis_namespace), detector=load_detector(detector, accts),
        accounts=accts, admin_token=os.environ.get("DISTILLGUARD_ADMIN_TOKEN") or None,
        upstream_api_key=os.environ.get("DISTILLGUARD_UPSTREAM_API_KEY") or None,
        flush_interval_s=flush_interval_ms / 1000, trust_forwarded_for=trust_forwarded_for,
        detector_thread=detector_thread,
    )


def gateway_command(
    upstream: str = typer.Option(..., help="Base URL of the OpenAI-compatible upstream (URL/v1/chat/completions)."),
    keys: Path = typer.Option(..., help="JSON Lines of {api_key, account_id, api_key_id}."),
    log_dir: Path = typer.Option(..., help="Folder for the traffic log (*.jsonl, rotated files .jsonl.gz)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    config: Path = typer.Option(None, help="Policy file (YAML or TOML): rules, quotas, allowlists, fail mode."),
    redis: str = typer.Option(None, help="redis://host:port/db to share quotas and flags between gateways."),
    accounts: Path = typer.Option(None, help="Account file (JSON Lines); shared payment_fingerprint links accounts."),
    detector: str = typer.Option(None, help="Online detector as package.module:Class (default: the built-in one)."),
    flush_interval_ms: float = typer.Option(200, help="Longest time a log record waits in memory (kill -9 bound)."),
    trust_forwarded_for: bool = typer.Option(False, help="Take client_ip from X-Forwarded-For (only behind a trusted proxy)."),
    redis_namespace: str = typer.Option("distillguard", help="Hash tag of the Redis keys: dg:{NAMESPACE}:..."),
    workers: int = typer.Option(1, min=1, help="Gateway processes sharing the port (SO_REUSEPORT); more than 1 "
                                               "needs --redis so that quotas, flags and keys are shared."),
    detector_thread: bool = typer.Option(False, help="Run the detector on its own thread instead of in short slices "
                                                     "on the event loop (for a slow --detector that releases the GIL)."),
) -> None:
    """Run the enforcing OpenAI-compatible proxy: log every request, detect, throttle or block.

    The admin API (/admin/keys, /admin/policy, /admin/flags) needs DISTILLGUARD_ADMIN_TOKEN; the key
    sent upstream comes from DISTILLGUARD_UPSTREAM_API_KEY.

    Example:

        distillguard gateway --upstream http://127.0.0.1:8000 --keys keys.jsonl --log-dir logs/ --port 8080 --config policy.yaml
    """
    import uvicorn

    if workers > 1 and not redis:
        typer.echo("error: --workers above 1 needs --redis URL (otherwise every process would keep its own quotas, "
                   "flags and admin keys); start redis-server and pass --redis redis://127.0.0.1:6379/0", err=True)
        raise typer.Exit(2)
    try:
        gw = build_gateway(upstream=upstream, keys=keys, log_dir=log_dir, config=config, redis=redis, accounts=accounts,
                           detector=detector, flush_interval_ms=flush_interval_ms,
                           trust_forwarded_for=trust_forwarded_for, redis_namespace=redis_namespace,
                           detector_thread=detector_thread)
    except DistillguardError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        from distillguard.gateway.server import CoalescingHttpToolsProtocol

        http: Any = CoalescingHttpToolsProtocol  # uvicorn's httptools protocol, head and body in one write
    except ImportError:
        http = "h11"
    # everything loaded so far (the detector's model, the libraries) lives as long as the process: keep
    # it out of the cyclic garbage collector, whose full passes otherwise pause serving for ~50 ms
    import gc

    gc.collect()
    gc.freeze()
    # the log writer and the detector run on threads: when one holds the GIL, the event loop waits for
    # at most this long (default 5 ms, which shows in the latency tail) before it gets it back
    sys.setswitchinterval(0.001)
    typer.echo(f"distillguard gateway on http://{host}:{port} -> {gw.upstream} (logs: {log_dir}, "
               f"state: {gw.state.backend}, processes: {workers})", err=True)
    config = uvicorn.Config(gw.app, host=host, port=port, loop=loop, http=http, log_level="warning", access_log=False,
                            proxy_headers=False, server_header=False, date_header=False, interface="asgi3",
                            timeout_graceful_shutdown=5, backlog=2048, lifespan="on")
    if workers == 1:
        uvicorn.Server(config).run()
        return
    _run_workers(config, host, port, workers)


def _listen(host: str, port: int) -> Any:
    import socket

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run_workers(config: Any, host: str, port: int, workers: int) -> None:
    """``workers`` forked copies of the (not yet started) gateway, each with its own listening socket on
    the port (SO_REUSEPORT: the kernel spreads connections), its own event loop, log writer (log files
    carry the pid) and detector; quotas, flags and admin keys are shared through Redis."""
    import signal

    import uvicorn

    try:
        first = _listen(host, port)  # fail here, once, when the port is taken
    except OSError as e:
        typer.echo(f"error: cannot listen on {host}:{port} ({e.strerror})", err=True)
        raise typer.Exit(2) from None
    pids = []
    for i in range(workers):
        pid = os.fork()
        if pid == 0:  # child: serve until told to stop
            code = 0
            try:
                if i:
                    first.close()
                sock = first if i == 0 else _listen(host, port)
                uvicorn.Server(config).run(sockets=[sock])
            except BaseException:  # noqa: BLE001 - a child must exit, never return into the parent's code
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    first.close()

    def stop(signum: int, _frame: Any) -> None:
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for p in pids:
        while True:
            try:
                _, st = os.waitpid(p, 0)
                break
            except InterruptedError:
                continue
        status = status or os.waitstatus_to_exitcode(st)
    if status:
        raise typer.Exit(1)
