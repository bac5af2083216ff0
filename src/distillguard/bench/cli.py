"""``distillguard bench`` (being built)."""

import typer

bench_app = typer.Typer(help="Benchmarks: detection quality, ingest/scan speed, gateway latency.", no_args_is_help=True)
