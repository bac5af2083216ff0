"""Run distillguard's own detector (``scan`` and ``replay``) and read back its output files.

The harness only reads the contract files (``verdicts.jsonl``, ``clusters.jsonl``,
``first_flags.jsonl``, contracts.md §2-§3), never the detector's internals, so it scores exactly
what a user gets. When the detector is not importable the row is reported as not available.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distillguard.bench.data import Traffic
from distillguard.errors import InputError


@dataclass
class DetectorRun:
    """What the harness needs from one detector run, aligned on ``traffic.account_ids``."""

    name: str
    available: bool
    note: str = ""
    error_detail: str = ""
    scores: np.ndarray | None = None
    flagged: np.ndarray | None = None
    cluster_ids: list[str | None] | None = None
    cluster_flagged: dict[str, bool] = field(default_factory=dict)
    first_flag_ts: dict[str, float] | None = None
    replay_note: str = ""
    elapsed_s: float | None = None
    replay_elapsed_s: float | None = None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of an output file the detector wrote (a line that is not JSON is an error naming it)."""
    from distillguard.report import read_jsonl

    if not path.is_file():
        raise InputError(f"the detector wrote no {path.name} in {path.parent}")
    return read_jsonl(path).rows


def _ts(value: Any) -> float:
    from distillguard.schema import parse_timestamp

    return parse_timestamp(value)


def read_scan_output(out_dir: Path, traffic: Traffic, name: str = "distillguard") -> DetectorRun:
    """Align ``verdicts.jsonl`` / ``clusters.jsonl`` of a scan output folder on the traffic's accounts.

    An account missing from ``verdicts.jsonl`` (it should not happen) scores 0 and is not flagged.
    """
    verdicts = {v["account_id"]: v for v in _read_jsonl(out_dir / "verdicts.jsonl")}
    clusters_path = out_dir / "clusters.jsonl"
    clusters = _read_jsonl(clusters_path) if clusters_path.is_file() else []
    ids = traffic.account_ids
    scores = np.array([float(verdicts.get(a, {}).get("score") or 0.0) for a in ids])
    flagged = np.array([bool(verdicts.get(a, {}).get("flagged")) for a in ids])
    cluster_ids = [verdicts.get(a, {}).get("cluster_id") for a in ids]
    missing = sum(a not in verdicts for a in ids)
    return DetectorRun(
        name=name, available=True, scores=scores, flagged=flagged, cluster_ids=cluster_ids,
        cluster_flagged={str(c["cluster_id"]): bool(c.get("flagged")) for c in clusters},
        note=f"{missing} accounts missing from verdicts.jsonl" if missing else "",
    )


def read_first_flags(out_dir: Path) -> dict[str, float]:
    """``{account_id: flagged_at (Unix s)}`` from a replay output folder's ``first_flags.jsonl``."""
    return {r["account_id"]: _ts(r["flagged_at"]) for r in _read_jsonl(out_dir / "first_flags.jsonl")}


def _quiet_kwargs(fn) -> dict[str, Any]:
    """``progress=False`` when ``fn`` takes it: the harness draws its own progress bar."""
    import inspect

    try:
        return {"progress": False} if "progress" in inspect.signature(fn).parameters else {}
    except (TypeError, ValueError):
        return {}


def run_distillguard(traffic: Traffic, out_dir: Path, *, replay: bool = True) -> DetectorRun:
    """Run ``scan`` (and ``replay``) through their Python API on the traffic's logs."""
    try:
        from distillguard.detect.scan import run_scan  # type: ignore[import-not-found]
    except ImportError as exc:
        return DetectorRun(name="distillguard", available=False,
                           note=f"not available (distillguard.detect.scan.run_scan: {exc})")
    scan_dir = Path(out_dir) / "scan"
    scan_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        run_scan(list(traffic.logs), scan_dir, accounts=traffic.accounts_file, **_quiet_kwargs(run_scan))
        run = read_scan_output(scan_dir, traffic)
    except Exception as exc:  # the detector under test failed: report it, keep the baselines
        return DetectorRun(name="distillguard", available=False,
                           note=f"scan failed: {type(exc).__name__}: {exc}".splitlines()[0],
                           error_detail=traceback.format_exc(limit=-4))
    run.elapsed_s = time.perf_counter() - t0
    if not replay:
        run.replay_note = "replay skipped (--no-replay)"
        return run
    try:
        from distillguard.detect.replay import run_replay  # type: ignore[import-not-found]
    except ImportError as exc:
        run.replay_note = f"replay not available ({exc})"
        return run
    replay_dir = Path(out_dir) / "replay"
    replay_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        run_replay(list(traffic.logs), replay_dir, accounts=traffic.accounts_file, **_quiet_kwargs(run_replay))
        run.first_flag_ts = read_first_flags(replay_dir)
        run.replay_elapsed_s = time.perf_counter() - t0
    except Exception as exc:
        run.replay_note = f"replay failed: {type(exc).__name__}: {exc}".splitlines()[0]
        run.error_detail = traceback.format_exc(limit=-4)
    return run
