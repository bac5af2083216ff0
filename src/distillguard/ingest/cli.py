"""``distillguard ingest``: append traffic logs to a DuckDB store."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from distillguard.errors import DistillguardError


def ingest_command(
    logs: list[Path] = typer.Argument(..., help="Traffic logs: .jsonl/.gz/.zst, .parquet, LiteLLM spend logs, Batch API output."),
    db: Path = typer.Option(..., "--db", help="DuckDB file to append to (created if absent)."),
    rejected: Path = typer.Option(None, "--rejected", help="Where rejected lines go (default: rejected.jsonl beside the DB)."),
    fmt: str = typer.Option("auto", "--format", help="auto, traffic, parquet, litellm or openai-batch."),
    batch_input: Path = typer.Option(None, "--batch-input", help="Batch API input file (default: found beside the output file)."),
    batch_account: str = typer.Option(None, "--batch-account", help="Account that submitted the Batch API files."),
) -> None:
    """Append traffic logs to a DuckDB store; re-ingesting the same lines adds nothing.

    Example: distillguard ingest logs/*.jsonl.gz --db traffic.duckdb
    """
    from rich.console import Console

    from distillguard.ingest import EventReader, EventStore, RejectWriter
    from distillguard.progress import byte_progress

    console = Console(stderr=True)
    t0 = time.perf_counter()
    try:
        rej_path = rejected or db.with_name("rejected.jsonl")
        store = EventStore(db)
        with RejectWriter(rej_path) as rej, byte_progress(logs, "ingest") as advance:
            reader = EventReader(rejects=rej, con=store.cursor(), fmt=fmt, on_progress=advance,
                                 batch_input=batch_input, batch_account=batch_account)
            store.append_all(reader, logs)
            dups = store.finish_run(rej)
            total = store.count()
        store.close()
    except DistillguardError as e:
        print(f"distillguard ingest: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    s = reader.stats
    console.print(
        f"ingested {s.accepted - dups:,} new events from {s.lines:,} lines in {s.files} file(s) "
        f"({time.perf_counter() - t0:.1f} s); rejected {rej.total:,} (of which {dups:,} duplicate request ids), "
        f"blank {s.blank:,}; store now holds {total:,} events in {db}"
    )
    if rej.total:
        console.print(f"rejected lines: {rej_path}  " + ", ".join(f"{k}: {v}" for k, v in rej.reasons.most_common(5)))
    for msg in s.damaged:
        console.print(f"warning: {msg}", markup=False)
