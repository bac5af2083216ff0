"""The ``distillguard`` command: a thin layer over the library.

Each command's implementation lives beside the code it drives (``simulate/cli.py``,
``gateway/cli.py``, ...); this module only assembles them. Modules imported here must be cheap to
import: heavy dependencies (torch, pyspark, litellm) are imported inside the command functions.
"""

from __future__ import annotations

import typer

from distillguard.bench.cli import bench_app
from distillguard.detect.cli import replay_command, scan_command, train_command
from distillguard.gateway.cli import gateway_command
from distillguard.ingest.cli import ingest_command
from distillguard.provenance.cli import provenance_app
from distillguard.report.cli import export_app
from distillguard.simulate.cli import demo_command, simulate_command

app = typer.Typer(
    name="distillguard",
    help="Detect, stop and prove distillation of a language model through its API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command("demo")(demo_command)
app.command("simulate")(simulate_command)
app.command("ingest")(ingest_command)
app.command("scan")(scan_command)
app.command("replay")(replay_command)
app.command("train")(train_command)
app.command("gateway")(gateway_command)
app.add_typer(export_app, name="export")
app.add_typer(bench_app, name="bench")
app.add_typer(provenance_app, name="provenance")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
