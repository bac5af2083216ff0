"""``distillguard gateway`` (being built)."""

import typer


def gateway_command(upstream: str = typer.Option(..., help="Base URL of the OpenAI-compatible upstream.")) -> None:
    """Run the enforcing OpenAI-compatible proxy."""
    raise typer.Exit(2)
