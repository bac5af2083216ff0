"""Every command has help text with an example, and a docs entry in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from distillguard.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def _commands(group=None, prefix=()):
    click_app = typer.main.get_command(app) if group is None else group
    for name, cmd in getattr(click_app, "commands", {}).items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,)


COMMANDS = sorted(_commands())


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_help_has_text_and_example(cmd):
    result = CliRunner().invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output or "example" in result.output, " ".join(cmd)


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c))
def test_command_documented_in_readme(cmd):
    assert f"distillguard {' '.join(cmd)}" in README.read_text(), " ".join(cmd)
