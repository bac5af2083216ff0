"""Read a scan output folder (the files ``distillguard scan --out DIR`` writes).

The folder layout is the contract between the detector and its consumers (report, STIX export):
``summary.json``, ``verdicts.jsonl``, ``clusters.jsonl``, ``rejected.jsonl``, ``signals.json``,
``evidence.jsonl``, ``accounts.parquet`` and ``graph_edges.parquet``. ``summary.json`` and
``verdicts.jsonl`` are required; every other file is optional and its part of the report is left out
(with a note) when it is missing.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from distillguard.errors import InputError

REQUIRED = ("summary.json", "verdicts.jsonl")
_FLAG_MARKERS = (b'"flagged":true', b'"flagged": true')


class JsonlRows(NamedTuple):
    """What :func:`read_jsonl` read: the rows it kept, and how many non-empty lines the file holds."""

    rows: list[dict[str, Any]]
    lines: int


def read_jsonl(path: Path, *, only_flagged: bool = False) -> JsonlRows:
    """Rows of a JSON Lines output file (a line that is not JSON is an error naming it); with
    ``only_flagged``, rows with ``flagged`` true only (fast path: other lines are not parsed, but a last
    line without its newline always is, so that a file cut short by a crash mid-write is an error, not
    a silently shorter list)."""
    rows: list[dict[str, Any]] = []
    n = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            if only_flagged and line.endswith(b"\n") and not any(m in line for m in _FLAG_MARKERS):
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(
                    f"{path}:{number} is not valid JSON ({exc}); re-run `distillguard scan` to rewrite the folder"
                ) from exc
            if not only_flagged or row.get("flagged") is True:
                rows.append(row)
    return JsonlRows(rows, n)


def _check_count(path: Path, what: str, found: int, summary: dict[str, Any], key: str) -> None:
    """A file of the folder must hold as many rows as summary.json says the scan wrote: fewer (or more)
    means a scan stopped mid-write, or files of two scans mixed, and the export would silently be wrong."""
    expected = summary.get(key)
    if isinstance(expected, int) and not isinstance(expected, bool) and found != expected:
        raise InputError(f"{path} holds {found:,} {what}, but summary.json says the scan wrote {expected:,}: the "
                         "folder is incomplete or mixes two scans; re-run `distillguard scan` to rewrite it")


@dataclass(kw_only=True)
class ScanOutput:
    """What the report and the STIX export need from a scan folder (flagged parts in full).

    Load one with :func:`load_scan`; build one by hand in tests::

        >>> s = ScanOutput(path=Path("."), summary={"requests": 3})
        >>> s.summary["requests"], s.flagged_verdicts
        (3, [])
    """

    path: Path
    summary: dict[str, Any]
    flagged_verdicts: list[dict[str, Any]] = field(default_factory=list)
    clusters: list[dict[str, Any]] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: Any = None  # pyarrow.Table or None
    edges: Any = None  # pyarrow.Table or None
    rejected_reasons: Counter = field(default_factory=Counter)
    rejected_examples: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def flagged_clusters(self) -> list[dict[str, Any]]:
        """Flagged clusters, highest score first."""
        return sorted((c for c in self.clusters if c.get("flagged")), key=lambda c: -float(c.get("score") or 0))

    def signal_by_name(self) -> dict[str, dict[str, Any]]:
        """The catalogue keyed by signal name (reasons refer to signals by name)."""
        return {s.get("name"): s for s in self.signals}


def load_scan(scan_dir: Path, *, with_tables: bool = True) -> ScanOutput:
    """Read a scan folder; raises :class:`InputError` with what to do when it is not one."""
    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir():
        raise InputError(f"{scan_dir} is not a folder; pass the --out folder of `distillguard scan`")
    absent = [name for name in REQUIRED if not (scan_dir / name).is_file()]
    if absent:
        raise InputError(
            f"{scan_dir} is not a complete scan folder ({', '.join(absent)} missing); "
            "run `distillguard scan LOG --out DIR` first and pass that DIR"
        )
    try:
        summary = json.loads((scan_dir / "summary.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{scan_dir / 'summary.json'} is not valid JSON ({exc}); re-run the scan") from exc
    out = ScanOutput(path=scan_dir, summary=summary)
    verdicts = scan_dir / "verdicts.jsonl"
    flagged, counted = read_jsonl(verdicts, only_flagged=True)
    out.flagged_verdicts = sorted(flagged, key=lambda v: -float(v.get("score") or 0))
    _check_count(verdicts, "accounts", counted, summary, "accounts")
    _check_count(verdicts, "flagged accounts", len(out.flagged_verdicts), summary, "flagged_accounts")

    def optional(name: str) -> Path | None:
        p = scan_dir / name
        if p.is_file():
            return p
        out.missing.append(name)
        return None

    if p := optional("clusters.jsonl"):
        out.clusters = read_jsonl(p).rows
        _check_count(p, "clusters", len(out.clusters), summary, "clusters")
        _check_count(p, "flagged clusters", sum(c.get("flagged") is True for c in out.clusters), summary, "flagged_clusters")
    if p := optional("signals.json"):
        try:
            out.signals = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{p} is not valid JSON ({exc}); re-run the scan") from exc
    if p := optional("evidence.jsonl"):
        rows = read_jsonl(p).rows
        _check_count(p, "evidence records (one per flagged account)", len(rows), summary, "flagged_accounts")
        out.evidence = {row["account_id"]: row for row in rows if "account_id" in row}
    if p := optional("rejected.jsonl"):
        with p.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError:
                    row = {"reason": "unreadable rejected.jsonl line", "raw": line[:300].decode("utf-8", "replace")}
                out.rejected_reasons[str(row.get("reason", "?"))] += 1
                if len(out.rejected_examples) < 20:
                    out.rejected_examples.append(row)
    if with_tables:
        import pyarrow.parquet as pq

        if p := optional("accounts.parquet"):
            out.accounts = pq.read_table(p)
        if p := optional("graph_edges.parquet"):
            out.edges = pq.read_table(p)
    return out
