"""``distillguard scan``, ``replay`` and ``train``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from distillguard.errors import DistillguardError


def _fail(cmd: str, e: Exception) -> None:
    print(f"distillguard {cmd}: {e}", file=sys.stderr)
    raise typer.Exit(2)


def scan_command(
    logs: list[Path] = typer.Argument(..., help="Traffic logs (.jsonl, .gz, .zst, .parquet, LiteLLM spend logs)."),
    out: Path = typer.Option(..., "--out", help="Output folder for verdicts, clusters, report and rejects."),
    accounts: Path = typer.Option(None, "--accounts", help="Account file (JSON Lines) with payment, creation time, email domain."),
    model: Path = typer.Option(None, "--model", help="Score model from `distillguard train` (default: the shipped one)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (embedded, default) or spark."),
    spark_master: str = typer.Option(None, "--spark-master", help="Spark master URL (default local[2]); e.g. spark://host:7077 or yarn."),
    redact: bool = typer.Option(False, "--redact", help="Replace prompt text in the outputs (example prompts, system prompts in request-fingerprint links) with SHA-256 hashes."),
    memory_limit: str = typer.Option("3GB", "--memory-limit", help="Memory for the events and DuckDB (e.g. 3GB, 16GB); past it, DuckDB spills to the temp folder. A log whose events fit a third of it stays in memory, which is faster."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Score every account and linked group of accounts for extraction.

    Example: distillguard scan logs/*.jsonl.gz --accounts accounts.jsonl --out scan-out
    """
    from distillguard.detect.scan import run_scan

    try:
        s = run_scan(list(logs), out, accounts=accounts, model=model, engine=engine, redact=redact,
                     spark_master=spark_master, progress=not quiet, memory_limit=memory_limit)
    except DistillguardError as e:
        _fail("scan", e)
    print(
        f"scanned {s['requests']:,} requests from {s['accounts']:,} accounts in {s['elapsed_s']:.1f} s "
        f"({s['requests'] / max(s['elapsed_s'], 1e-9):,.0f} req/s); rejected {s['rejected']:,} lines\n"
        f"flagged {s['flagged_accounts']:,} accounts and {s['flagged_clusters']:,} of {s['clusters']:,} linked groups "
        f"(threshold {s['threshold']:.3f})\n"
        f"report: {Path(out) / 'report.html'}"
    )
    for msg in s.get("damaged_inputs") or []:
        print(f"warning: {msg}", file=sys.stderr)


def replay_command(
    logs: list[Path] = typer.Argument(..., help="Traffic logs, replayed in timestamp order."),
    out: Path = typer.Option(..., "--out", help="Output folder for first_flags.jsonl and rejects."),
    accounts: Path = typer.Option(None, "--accounts", help="Account file (JSON Lines)."),
    model: Path = typer.Option(None, "--model", help="Score model from `distillguard train`."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Run the gateway's online detector over logs, request by request, and record when each account was first flagged.

    Example: distillguard replay logs/*.jsonl.gz --accounts accounts.jsonl --out replay-out
    """
    from distillguard.detect.replay import run_replay

    try:
        s = run_replay(list(logs), out, accounts=accounts, model=model, progress=not quiet)
    except DistillguardError as e:
        _fail("replay", e)
    if s.get("sorted_because"):
        print(f"the log is not in time order ({s['sorted_because']}): it was loaded and sorted first", file=sys.stderr)
    print(
        f"replayed {s['requests']:,} requests ({s['online_requests_per_s']:,.0f} req/s online); "
        f"flagged {s['flagged_accounts']:,} of {s['accounts']:,} accounts; first flags: {Path(out) / 'first_flags.jsonl'}"
    )
    for msg in s.get("damaged_inputs") or []:
        print(f"warning: {msg}", file=sys.stderr)


def train_command(
    traffic: list[Path] = typer.Argument(..., help="Labelled traffic folders from `distillguard simulate` (traffic.jsonl.gz, accounts.jsonl, labels.jsonl), or log files with --labels."),
    labels: Path = typer.Option(None, "--labels", help="Label file (account_id, label) when TRAFFIC are log files."),
    accounts: Path = typer.Option(None, "--accounts", help="Account file when TRAFFIC are log files."),
    out: Path = typer.Option(Path("model.json"), "--out", help="Where to write the model."),
    target_fpr: float = typer.Option(1e-3, "--target-fpr", help="Benign false-positive rate the threshold is chosen for."),
    exclude: list[str] = typer.Option([], "--exclude", help="A signal to hold at weight 0 (repeatable); it is still computed and shown."),
    online: bool = typer.Option(True, "--online/--no-online", help="Also fit the early weights for young linked clusters and choose the online detector's threshold on peak scores, replaying the traffic twice (about triples the time)."),
    early_accounts: bool = typer.Option(True, "--early-accounts/--no-early-accounts", help="With --online, also fit first-day weights for single accounts (they flag an account in its first day when they, or the main weights, reach the online threshold)."),
    shapes: bool = typer.Option(True, "--shapes/--no-shapes", help="Let each signal learn a monotone shape (ramps at quantiles of its feature, in the catalogue's direction) instead of only the catalogue's one ramp."),
    confidence: float = typer.Option(0.95, "--confidence", min=0.0, max=0.999999, help="Choose the thresholds so that the benign rate is within --target-fpr with this confidence (one-sided Clopper-Pearson bound on the training accounts); 0 chooses them at the target rate itself."),
) -> None:
    """Fit the signal weights and the operating threshold on labelled traffic (use with `scan --model`).

    Example: distillguard train sim-seed1 sim-seed2 --out model.json
    """
    from distillguard.detect.train import train_model

    try:
        model, report = train_model(list(traffic), labels=labels, accounts=accounts, target_fpr=target_fpr, online=online, early_accounts=early_accounts,
                                    exclude=frozenset(exclude), shapes=shapes, confidence=confidence or None, progress=True)
    except DistillguardError as e:
        _fail("train", e)
    model.save(out)
    print(report)
    print(f"model written to {out}")
