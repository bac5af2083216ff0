"""``distillguard bench``: detection quality (``detect``), and speed benchmarks added beside it.

Keep module-level imports cheap: the harness (numpy, scikit-learn) is imported inside commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distillguard.bench.speed import bench_ingest_command, bench_scan_command
from distillguard.gateway.bench import bench_gateway_command

bench_app = typer.Typer(
    help="Benchmarks: detection quality, ingest/scan speed, gateway latency.", no_args_is_help=True
)


@bench_app.command("detect")
def detect_command(
    traffic: Optional[Path] = typer.Option(
        None, "--traffic", help="Labelled traffic folder (traffic.jsonl.gz, accounts.jsonl, labels.jsonl)."
    ),
    preset: Optional[str] = typer.Option(
        None, "--preset", help="Simulate the evaluation traffic: 'small' or 'standard' (default small)."
    ),
    seed: int = typer.Option(1, "--seed", help="Seed of the simulated evaluation traffic (reported)."),
    tune_seed: Optional[int] = typer.Option(
        None, "--tune-seed", help="Seed of the simulated tuning traffic (default: --seed + 1000)."
    ),
    tune_traffic: Optional[Path] = typer.Option(
        None, "--tune-traffic", help="Labelled tuning traffic folder (instead of simulating it)."
    ),
    tune_preset: Optional[str] = typer.Option(
        None, "--tune-preset", help="Preset of the simulated tuning traffic (default: --preset, else small)."
    ),
    tune_fpr: float = typer.Option(1e-3, "--tune-fpr", help="Benign FPR at which baseline thresholds are tuned."),
    no_detector: bool = typer.Option(False, "--no-detector", help="Run the baselines only."),
    no_replay: bool = typer.Option(False, "--no-replay", help="Skip distillguard replay (time to detection)."),
    jobs: int = typer.Option(2, "--jobs", min=1, help="Processes for simulating/parsing the two traffics (1 or 2)."),
    reader: str = typer.Option("python", "--reader", help="Log parser: 'python' (schema.event_from_record) or 'ingest'."),
    out: Path = typer.Option(..., "--out", help="Output folder for results.json and results.md."),
) -> None:
    """Score distillguard and the baselines on labelled traffic; write results.json and results.md.

    Thresholds of the baselines are tuned on traffic from --tune-seed (or --tune-traffic); every
    reported figure comes from --seed (or --traffic).

    Example: distillguard bench detect --preset standard --seed 1 --out bench-out/detect
    """
    from rich.console import Console

    from distillguard.bench.harness import run_detect_bench
    from distillguard.errors import DistillguardError

    err = Console(stderr=True)
    if traffic is not None and preset is not None:
        err.print("error: give either --traffic or --preset, not both")
        raise typer.Exit(2)
    try:
        results = run_detect_bench(
            out, traffic=traffic, tune_traffic=tune_traffic, preset=preset, tune_preset=tune_preset,
            seed=seed, tune_seed=tune_seed, tune_fpr=tune_fpr, detector=not no_detector,
            replay=not no_replay, jobs=jobs, reader=reader,
        )
    except DistillguardError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    Console().print((out / "results.md").read_text(), markup=False, highlight=False, soft_wrap=True)
    Console().print(f"wrote {out / 'results.json'} and {out / 'results.md'} "
                    f"({len(results['detectors'])} detectors)", markup=False, highlight=False)


@bench_app.command("summary")
def summary_command(
    runs: list[Path] = typer.Argument(..., help="`bench detect --out` folders (or their results.json), one per evaluation traffic."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the tables to this Markdown file."),
) -> None:
    """Pool several `bench detect` runs: one row per run, a pooled row, the targets met, per-archetype tables.

    Example: distillguard bench summary bench-out/seed1 bench-out/seed2 bench-out/seed3 --out summary.md
    """
    from rich.console import Console

    from distillguard.bench.summary import load_runs, summarize, to_markdown
    from distillguard.errors import DistillguardError

    try:
        md = to_markdown(summarize(load_runs(runs)))
    except DistillguardError as exc:
        Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    Console().print(md, markup=False, highlight=False, soft_wrap=True)
    if out is not None:
        out.write_text(md)


bench_app.command("gateway")(bench_gateway_command)
bench_app.command("ingest")(bench_ingest_command)
bench_app.command("scan")(bench_scan_command)
