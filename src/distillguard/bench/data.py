"""Labelled traffic for the benchmark: the event table, sorted by account and time, and the labels.

A traffic folder is what ``distillguard simulate`` writes: ``traffic.jsonl.gz`` (or any ``traffic*``
log), ``accounts.jsonl`` and ``labels.jsonl`` (contracts.md §1). :func:`load_traffic` reads it into
a :class:`Traffic`: numpy arrays of the event columns the baselines need, sorted by (account, time),
and the per-account labels aligned on ``account_ids``.

Events are parsed with :func:`distillguard.schema.event_from_record` (the Python twin of ingest's SQL
normaliser) or, with ``reader="ingest"``, with distillguard's ingest reader; both give the same
events. Prompts are kept to their first :data:`PROMPT_MAX_CHARS` characters and response texts are
dropped (the benchmark never reads them).
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

#: Prompts are cut to this many characters on load (``prompt_chars`` keeps the full length).
PROMPT_MAX_CHARS = 2000
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


def python_events(paths: list[Path], *, chunk_rows: int = 100_000) -> pa.Table:
    """Parse contract §1 JSONL with orjson and :func:`event_from_record`; rejected lines are skipped.

    The Python twin of ingest's SQL normaliser (kept equal by ``tests/ingest``'s parity test).
    Duplicated request ids keep their first occurrence.
    """
    schema = pa.schema([EVENT_SCHEMA.field(c) for c in BENCH_COLUMNS])
    batches: list[pa.RecordBatch] = []
    cols: dict[str, list[Any]] = {c: [] for c in BENCH_COLUMNS}
    seen: set[str] = set()

    def flush():
        if cols["request_id"]:
            batches.append(pa.record_batch([pa.array(cols[c], type=schema.field(c).type) for c in BENCH_COLUMNS],
                                           schema=schema))
            for c in BENCH_COLUMNS:
                cols[c] = []

    for path in paths:
        if path.name.endswith(".parquet"):
            return _reader_events(paths)
        with _open_text(path) as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    ev = event_from_record(orjson.loads(line))
                except (orjson.JSONDecodeError, RecordRejected):
                    continue
                if ev["request_id"] in seen:
                    continue
                seen.add(ev["request_id"])
                p = ev["prompt"]
                if p is not None and len(p) > PROMPT_MAX_CHARS:
                    ev["prompt"] = p[:PROMPT_MAX_CHARS]
                for c in BENCH_COLUMNS:
                    cols[c].append(ev[c])
                if len(cols["request_id"]) >= chunk_rows:
                    flush()
    flush()
    return pa.Table.from_batches(batches, schema=schema)


def _reader_events(paths: list[Path]) -> pa.Table:
    """Events through distillguard's vectorised ingest reader (no store: the benchmark only reads)."""
    import tempfile

    from distillguard.ingest import EventReader, RejectWriter

    with tempfile.TemporaryDirectory() as tmp:
        with RejectWriter(Path(tmp) / "rejected.jsonl") as rej:
            reader = EventReader(rejects=rej, prompt_max_chars=PROMPT_MAX_CHARS, keep_response_text=False)
            tables = [b.select(list(BENCH_COLUMNS)) for b in reader.iter_batches(paths)]
    schema = pa.schema([EVENT_SCHEMA.field(c) for c in BENCH_COLUMNS])
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    # duplicated request ids keep their first occurrence, as the ingest store does
    if table.num_rows and pc.count_distinct(table.column("request_id")).as_py() < table.num_rows:
        import duckdb

        con = duckdb.connect()
        con.register("t", table)
        table = con.sql("select * exclude (_i) from (select *, row_number() over () as _i from t) "
                        "qualify row_number() over (partition by request_id order by _i) = 1 order by _i"
                        ).to_arrow_table().cast(schema)
        con.close()
    return table


READERS = {"python": python_events, "ingest": _reader_events}
#: The default reader: the Python normaliser parses the simulator's logs about 2.5x faster here than
#: ingest's DuckDB reader (which pays for rejection bookkeeping the benchmark does not need).
DEFAULT_READER = "python"


def load_event_table(paths: list[Path], *, reader: str = DEFAULT_READER,
                     cache_dir: Path | None = None) -> tuple[pa.Table, str]:
    """The event table of ``paths`` (only :data:`BENCH_COLUMNS`) and which reader produced it.

    ``reader``: ``"python"`` (:func:`python_events`) or ``"ingest"`` (distillguard's DuckDB
    ingest reader, the normaliser ``scan`` uses). With ``cache_dir`` the table is kept there as an
    Arrow IPC file keyed by the logs' paths, sizes and modification times, and memory-mapped back.
    """
    if reader not in READERS:
        raise InputError(f"unknown reader {reader!r}; choose one of {', '.join(READERS)}")
    paths = [Path(p) for p in paths]
    if cache_dir is None:
        return READERS[reader](paths), reader
    import hashlib

    key = hashlib.sha256(repr([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
                              + [reader, PROMPT_MAX_CHARS, BENCH_COLUMNS]).encode()).hexdigest()[:20]
    cache = Path(cache_dir) / f"events-{key}.arrow"
    if not cache.is_file():
        table = READERS[reader](paths)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table, max_chunksize=200_000)
        tmp.replace(cache)
        del table
    return pa.ipc.open_file(pa.memory_map(str(cache), "r")).read_all(), f"{reader} (cached)"


#: The labels a label file may give an account.
LABELS = ("benign", "extraction")


def read_labels(path: Path) -> dict[str, dict]:
    """A label file (``account_id``, ``label``, optional ``campaign_id`` and ``archetype`` per line) as
    ``{account_id: row}``; a line that is not JSON, has no string ``account_id`` or a label other than
    :data:`LABELS` is an error that names it (labels are what a model is fitted on: none is skipped)."""
    rows = {}
    with open(path, "rb") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"{path}:{i}: not JSON ({exc}); fix or regenerate the file") from None
            if not isinstance(r, dict) or not isinstance(r.get("account_id"), str):
                raise InputError(f"{path}:{i}: a label line is an object with a string 'account_id'")
            if r.get("label") not in LABELS:
                raise InputError(f"{path}:{i}: label must be 'benign' or 'extraction', got {r.get('label')!r}")
            rows[r["account_id"]] = r
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

    def prompts(self, idx: np.ndarray) -> list[str | None]:
        """The prompts of events ``idx`` (without converting the whole column)."""
        return self.table.column("prompt").take(pa.array(np.asarray(idx, dtype=np.int64))).to_pylist()

    def tokens(self) -> np.ndarray:
        """Prompt + completion tokens per event (prompt chars / 4 where usage is missing)."""
        pt = self.column("prompt_tokens")
        pt = np.where(np.isnan(pt), self.column("prompt_chars") / 4.0, pt)
        ct = np.nan_to_num(self.column("completion_tokens"), nan=0.0)
        return np.nan_to_num(pt, nan=0.0) + ct


def load_traffic(folder: Path, *, logs: list[Path] | None = None, reader: str = DEFAULT_READER,
                 cache_dir: Path | None = None) -> Traffic:
    """Read a labelled traffic folder into a :class:`Traffic` (see module docstring and
    :func:`load_event_table` for ``reader`` and ``cache_dir``)."""
    folder = Path(folder)
    labels_path = folder / "labels.jsonl"
    if not labels_path.is_file():
        raise InputError(f"no labels.jsonl in {folder}; the benchmark needs labelled traffic "
                         f"(`distillguard simulate --out {folder}` writes it)")
    logs = logs or traffic_logs(folder)
    table, reader = load_event_table(logs, reader=reader, cache_dir=cache_dir)
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

    rows = read_labels(labels_path)
    missing = [a for a in account_ids if a not in rows]
    if missing:
        raise InputError(f"{len(missing)} accounts in the traffic have no line in {labels_path} "
                         f"(e.g. {missing[0]!r}); every account needs a label")
    label = np.array([rows[a].get("label") for a in account_ids], dtype=object)
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
