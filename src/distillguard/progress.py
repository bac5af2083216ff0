"""Progress bars (rich) for long work, written to stderr and silent when it is not a terminal."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


def _total_bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.path.getsize(p)
        except OSError:
            pass
    return total


@contextmanager
def byte_progress(paths: list[Path], label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(nbytes)``; shows a bar over the inputs' size (compressed files advance faster)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    total = _total_bytes([Path(p) for p in paths])
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True
    ) as prog:
        task = prog.add_task(label, total=None)
        seen = [0]

        def advance(n: int) -> None:
            seen[0] += n
            prog.update(task, completed=seen[0], total=max(total, seen[0]) if total else None)

        yield advance


@contextmanager
def count_progress(total: int, label: str) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, description="")``; shows a bar over ``total`` items (requests, steps)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeRemainingColumn(), transient=True) as prog:
        task = prog.add_task("", total=total)

        def advance(n: int = 1, description: str = "") -> None:
            prog.update(task, advance=n, description=description)

        yield advance
