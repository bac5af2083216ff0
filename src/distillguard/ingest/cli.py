"""``distillguard ingest`` (being built)."""

from pathlib import Path

import typer


def ingest_command(logs: list[Path] = typer.Argument(...), db: Path = typer.Option(...)) -> None:
    """Append traffic logs to a DuckDB store."""
    raise typer.Exit(2)
