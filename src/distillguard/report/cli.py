"""``distillguard export`` (being built)."""

import typer

export_app = typer.Typer(help="Export scan results for sharing (STIX 2.1).", no_args_is_help=True)
