"""Labelled traffic for the benchmark: the event table, sorted by account and time, and the labels.

A traffic folder is what ``distillguard simulate`` writes: ``traffic.jsonl.gz`` (or any ``traffic*``
log), ``accounts.jsonl`` and ``labels.jsonl`` (contracts.md §1). :func:`load_traffic` reads it into
a :class:`Traffic`: numpy arrays of the event columns the baselines need, sorted by (account, time),
and the per-account labels aligned on ``account_ids``.

Events are read with ``distillguard.ingest.load_events`` when that exists; otherwise with a small
fallback reader here (orjson + :func:`distillguard.schema.event_from_record`; slower, same result).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.errors import InputError, RecordRejected
from distillguard.schema import EVENT_SCHEMA, event_from_record

#: Event columns the benchmark keeps (the rest, e.g. response text, is dropped to save memory).
BENCH_COLUMNS = (
    "request_id", "ts", "account_id", "api_key_id", "model", "n", "temperature", "logprobs",
    "stream", "n_assistant_msgs", "prompt", "prompt_chars", "prompt_tokens", "completion_tokens",
)


def traffic_logs(folder: Path) -> list[Path]:
    """The traffic-log files of a simulator output folder (``traffic*.jsonl[.gz|.zst]``, ``*.parquet``)."""
    folder = Path(folder)
    logs = sorted(
        p for p in folder.glob("traffic*")
        if p.is_file() and (p.name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")))
    )
    if not logs:
        raise InputError(
            f"no traffic log (traffic*.jsonl[.gz]) in {folder}; create one with "
            f"`distillguard simulate --out {folder}` or pass --preset"
        )
    return logs


def _open_text(path: Path) -> io.BufferedReader:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def _fallback_load_events(paths: list[Path]) -> pa.Table:
    """Parse contract §1 JSONL with orjson and ``event_from_record``; rejected lines are skipped."""
    cols: dict[str, list[Any]] = {c: [] for c in BENCH_COLUMNS}
    for path in paths:
        if path.name.endswith(".parquet"):
            raise InputError(f"{path}: Parquet traffic needs distillguard.ingest.load_events")
        with _open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    ev = event_from_record(orjson.loads(line))
                except (orjson.JSONDecodeError, RecordRejected):
                    continue
                for c in BENCH_COLUMNS:
                    cols[c].append(ev[c])
    schema = pa.schema([EVENT_SCHEMA.field(c) for c in BENCH_COLUMNS])
    return pa.table({c: pa.array(cols[c], type=schema.field(c).type) for c in BENCH_COLUMNS}, schema=schema)


def load_event_table(paths: list[Path]) -> tuple[pa.Table, str]:
    """The event table of ``paths`` (only :data:`BENCH_COLUMNS`) and which reader produced it."""
    try:
        from distillguard.ingest import load_events  # type: ignore[attr-defined]
    except ImportError:
        load_events = None
    if load_events is not None:
        table = load_events([Path(p) for p in paths])
        return table.select(list(BENCH_COLUMNS)), "distillguard.ingest.load_events"
    return _fallback_load_events([Path(p) for p in paths]), "bench fallback reader"


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError as exc:
                    raise InputError(f"{path}:{i}: not JSON ({exc}); fix or regenerate the file") from None
    return rows


@dataclass
class Traffic:
    """Labelled traffic, one array per event column, sorted by (account, timestamp).

    ``acc[i]`` is the index in ``account_ids`` of event ``i``; ``starts[a]:starts[a+1]`` are the
    events of account ``a``. ``label``, ``campaign``, ``archetype`` are aligned on ``account_ids``.
    """

    folder: Path
    logs: list[Path]
    accounts_file: Path | None
    table: pa.Table
    account_ids: np.ndarray
    acc: np.ndarray
    starts: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    campaign: np.ndarray
    archetype: np.ndarray
    reader: str = ""
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        """1 for extraction accounts, 0 for benign."""
        return (self.label == "extraction").astype(int)

    @property
    def requests(self) -> np.ndarray:
        """Requests per account."""
        return np.diff(self.starts)

    @property
    def n_events(self) -> int:
        return int(self.ts.size)

    def column(self, name: str) -> np.ndarray:
        """One event column as numpy (nulls become NaN for numbers, ``None`` for strings)."""
        if name not in self.cache:
            col = self.table.column(name)
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                self.cache[name] = np.asarray(col.to_pylist(), dtype=object)
            elif pa.types.is_boolean(col.type):
                self.cache[name] = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            else:
                self.cache[name] = np.asarray(
                    col.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float
                )
        return self.cache[name]

    def tokens(self) -> np.ndarray:
        """Prompt + completion tokens per event (prompt chars / 4 where usage is missing)."""
        pt = self.column("prompt_tokens")
        pt = np.where(np.isnan(pt), self.column("prompt_chars") / 4.0, pt)
        ct = np.nan_to_num(self.column("completion_tokens"), nan=0.0)
        return np.nan_to_num(pt, nan=0.0) + ct


def load_traffic(folder: Path, *, logs: list[Path] | None = None) -> Traffic:
    """Read a labelled traffic folder into a :class:`Traffic` (see module docstring)."""
    folder = Path(folder)
    labels_path = folder / "labels.jsonl"
    if not labels_path.is_file():
        raise InputError(f"no labels.jsonl in {folder}; the benchmark needs labelled traffic "
                         f"(`distillguard simulate --out {folder}` writes it)")
    logs = logs or traffic_logs(folder)
    table, reader = load_event_table(logs)
    if table.num_rows == 0:
        raise InputError(f"no readable request in {', '.join(map(str, logs))}")
    enc = pc.dictionary_encode(table.column("account_id").combine_chunks())
    acc_raw = enc.indices.to_numpy().astype(np.int64)
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    # sort accounts by name so results do not depend on log order
    name_order = np.argsort(names.astype(str), kind="stable")
    rank = np.empty_like(name_order)
    rank[name_order] = np.arange(name_order.size)
    acc_sorted_ids = rank[acc_raw]
    ts = table.column("ts").to_numpy().astype(float)
    order = np.lexsort((ts, acc_sorted_ids))
    table = table.take(pa.array(order))
    acc = acc_sorted_ids[order]
    account_ids = names[name_order]
    starts = np.searchsorted(acc, np.arange(account_ids.size + 1), side="left")

    rows = {r.get("account_id"): r for r in _read_jsonl(labels_path)}
    missing = [a for a in account_ids if a not in rows]
    if missing:
        raise InputError(f"{len(missing)} accounts in the traffic have no line in {labels_path} "
                         f"(e.g. {missing[0]!r}); every account needs a label")
    label = np.array([rows[a].get("label") for a in account_ids], dtype=object)
    bad = set(label) - {"benign", "extraction"}
    if bad:
        raise InputError(f"{labels_path}: label must be 'benign' or 'extraction', got {sorted(map(str, bad))}")
    campaign = np.array([rows[a].get("campaign_id") if label[i] == "extraction" else None
                         for i, a in enumerate(account_ids)], dtype=object)
    # an extraction account without a campaign id is its own one-account campaign
    for i in np.flatnonzero((label == "extraction") & (campaign == None)):  # noqa: E711
        campaign[i] = f"solo:{account_ids[i]}"
    archetype = np.array([str(rows[a].get("archetype") or "unknown") for a in account_ids], dtype=object)
    acc_file = folder / "accounts.jsonl"
    return Traffic(
        folder=folder, logs=list(logs), accounts_file=acc_file if acc_file.is_file() else None,
        table=table, account_ids=account_ids, acc=acc, starts=starts, ts=ts[order], label=label,
        campaign=campaign, archetype=archetype, reader=reader,
    )
