"""``distillguard simulate`` and ``demo`` (being built)."""

from pathlib import Path

import typer


def simulate_command(out: Path = typer.Option(..., help="Output folder.")) -> None:
    """Simulate labelled API traffic on real prompts."""
    raise typer.Exit(2)


def demo_command(out: Path = typer.Option(Path("demo-out"), help="Output folder.")) -> None:
    """Run the main job on the shipped sample."""
    raise typer.Exit(2)
