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
                  trust_forwarded_for: bool = False, redis_namespace: str = "distillguard") -> Any:
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
) -> None:
    """Run the enforcing OpenAI-compatible proxy: log every request, detect, throttle or block.

    The admin API (/admin/keys, /admin/policy, /admin/flags) needs DISTILLGUARD_ADMIN_TOKEN; the key
    sent upstream comes from DISTILLGUARD_UPSTREAM_API_KEY.

    Example:

        distillguard gateway --upstream http://127.0.0.1:8000 --keys keys.jsonl --log-dir logs/ --port 8080 --config policy.yaml
    """
    import uvicorn

    try:
        gw = build_gateway(upstream=upstream, keys=keys, log_dir=log_dir, config=config, redis=redis, accounts=accounts,
                           detector=detector, flush_interval_ms=flush_interval_ms,
                           trust_forwarded_for=trust_forwarded_for, redis_namespace=redis_namespace)
    except DistillguardError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
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
               f"state: {gw.state.backend})", err=True)
    uvicorn.run(gw.app, host=host, port=port, loop=loop, http=http, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False, date_header=False, interface="asgi3",
                timeout_graceful_shutdown=5, backlog=2048)
