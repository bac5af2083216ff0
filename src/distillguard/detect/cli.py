"""``distillguard scan``, ``replay`` and ``train`` (being built)."""

from pathlib import Path

import typer


def scan_command(logs: list[Path] = typer.Argument(...), out: Path = typer.Option(...)) -> None:
    """Score every account and linked group in traffic logs."""
    raise typer.Exit(2)


def replay_command(logs: list[Path] = typer.Argument(...), out: Path = typer.Option(...)) -> None:
    """Run the online detector over logs in time order."""
    raise typer.Exit(2)


def train_command(labels: Path = typer.Option(...)) -> None:
    """Fit a supervised model on labelled traffic."""
    raise typer.Exit(2)
