"""``distillguard simulate`` and ``demo`` (demo: being built by the lead)."""

from pathlib import Path
from typing import Optional

import typer


def simulate_command(
    out: Path = typer.Option(..., "--out", help="Output folder (created if missing)."),
    accounts: Optional[int] = typer.Option(None, "--accounts", help="Benign accounts (overrides the preset's; "
                                           "one campaign of every extraction archetype is added)."),
    days: Optional[int] = typer.Option(None, "--days", help="Length of the window in days."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives identical files."),
    data: Optional[Path] = typer.Option(None, "--data", help="Raw data folder laid out like ../shared/data/raw "
                                        "(default: ../shared/data/raw if present, else the shipped sample)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="small (600 benign accounts, 8 campaigns, 3 days) "
                                         "or standard (10,000 benign accounts, 22 campaigns, 10 days)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar and no table."),
) -> None:
    """Simulate labelled API traffic (benign archetypes and extraction campaigns) on real prompts.

    Writes OUT/traffic.jsonl.gz (traffic-log records), OUT/accounts.jsonl, OUT/labels.jsonl and
    OUT/realism.json, and prints the realism table.

    Example:

        distillguard simulate --out sim --preset small --seed 1
    """
    from rich.console import Console

    from distillguard.errors import DistillguardError
    from distillguard.simulate.core import simulate
    from distillguard.simulate.realism import print_realism

    console = Console(stderr=False)
    try:
        res = simulate(out, preset=preset, n_accounts=accounts, days=days, seed=seed, data_path=data,
                       progress=not quiet)
    except DistillguardError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None
    if not quiet:
        print_realism(res.realism, console)
        console.print(f"data: {res.realism['data']['folder']}")
        console.print(f"wrote {res.traffic}, {res.accounts.name}, {res.labels.name}, {res.realism_path.name} "
                      f"in {res.seconds:.1f} s")


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Output folder."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the simulated traffic."),
) -> None:
    """Run the main job on the shipped sample: simulate traffic, scan it, replay it online, print the findings.

    Example: distillguard demo --out demo-out
    """
    from distillguard.demo import run_demo
    from distillguard.errors import DistillguardError

    try:
        run_demo(out, seed=seed)
    except DistillguardError as e:
        print(f"distillguard demo: {e}")
        raise typer.Exit(2) from None
