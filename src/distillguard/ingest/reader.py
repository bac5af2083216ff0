"""Read traffic logs of every supported format into event batches (Arrow), reporting rejects.

Formats (detected from the name and the first record, or forced with ``fmt``):

- ``traffic``: the traffic-log JSON Lines of contracts.md §1 (plain, ``.gz``, ``.zst``);
- ``parquet``: the same records as Parquet (nested objects as structs or JSON strings);
- ``litellm``: LiteLLM ``LiteLLM_SpendLogs`` rows exported as JSON Lines or CSV;
- ``openai-batch``: an OpenAI Batch API output file whose input file sits beside it (see
  :mod:`distillguard.ingest.formats`).

Every format is first turned into traffic-log lines and then normalised by the same SQL
(:mod:`distillguard.ingest.normalize`), so validation and rejection reasons are identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator, Iterator

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.errors import InputError
from distillguard.ingest.lines import DamagedStream, LineChunk, iter_line_chunks, open_binary
from distillguard.ingest.normalize import NOT_JSON, fast_normalize_sql, slow_normalize_sql
from distillguard.ingest.rejects import RejectWriter
from distillguard.schema import EVENT_COLUMNS, EVENT_SCHEMA

FORMATS = ("auto", "traffic", "parquet", "litellm", "openai-batch")


#: The reason of a last line that does not parse in a file that ends inside it (no newline after it).
NOT_JSON_AT_END = NOT_JSON + ", and the file ends inside it (cut short mid-write?)"


@dataclass
class IngestStats:
    """Counts for the printed summary."""

    files: int = 0
    lines: int = 0
    blank: int = 0
    accepted: int = 0
    rejected: int = 0
    bytes: int = 0
    unauthenticated: int = 0  # gateway requests refused for a missing or unknown key (see schema.UNAUTHENTICATED_ACCOUNT)
    damaged: list[str] = field(default_factory=list)  # one message per input that ends in damage (lines.DamagedStream)
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)


def connect(database: str = ":memory:", *, memory_limit: str | None = None,
            temp_directory: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for distillguard (UTC, bounded memory, spilling to ``temp_directory``)."""
    con = duckdb.connect(database)
    if temp_directory is not None:
        con.execute(f"SET temp_directory = '{str(temp_directory).replace(chr(39), chr(39) * 2)}'")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # distillguard draws its own progress bars
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = true")
    return con


def sniff_format(path: Path) -> str:
    """Guess the format of ``path`` from its name and first non-blank line."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        return "litellm"
    import orjson

    head = b""
    with open_binary(path) as f:
        try:
            while len(head) < (1 << 20) and (block := f.read(1 << 16)):
                head += block
        except (OSError, EOFError):
            pass  # a damaged stream is reported when it is read for real
    for raw in head.split(b"\n"):
        if not raw.strip():
            continue
        try:
            rec = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "traffic"  # let the normaliser report it
        if isinstance(rec, dict):
            if "custom_id" in rec and ("response" in rec or "error" in rec) and "request" not in rec:
                return "openai-batch"
            if "startTime" in rec or "call_type" in rec or "requester_ip_address" in rec:
                return "litellm"
        return "traffic"
    return "traffic"


def _lines_at(lines: pa.Table, line_no: pa.ChunkedArray) -> list[str]:
    """The raw text of the given line numbers (for reject records)."""
    idx = pc.index_in(line_no, value_set=lines.column("line_no").combine_chunks())
    return [x.rstrip("\r\n") for x in lines.column("line").take(idx).to_pylist()]


class EventReader:
    """Turns log files into batches of events (:data:`EVENT_SCHEMA` plus ``_src`` and ``_line``).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "log.jsonl")
    >>> _ = open(p, "w").write('{"request_id":"a","timestamp":1,"account_id":"x","endpoint":"/v1/chat/completions","request":{}}\\nnot json\\n')
    >>> rej = RejectWriter(os.path.join(d, "rejected.jsonl"))
    >>> tables = list(EventReader(rejects=rej).iter_batches([p]))
    >>> tables[0].num_rows, rej.total
    (1, 1)
    """

    def __init__(
        self,
        *,
        rejects: RejectWriter,
        con: duckdb.DuckDBPyConnection | None = None,
        fmt: str = "auto",
        chunk_bytes: int = 64 * 1024 * 1024,
        first_chunk_bytes: int | None = None,
        prompt_max_chars: int | None = None,
        keep_response_text: bool = True,
        on_progress: Callable[[int], None] | None = None,
        batch_input: Path | None = None,
        batch_account: str | None = None,
    ):
        if fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.rejects = rejects
        self.con = con or connect()
        self.fmt = fmt
        self.chunk_bytes = chunk_bytes
        self.first_chunk_bytes = first_chunk_bytes  # log files start with smaller chunks (see iter_line_chunks)
        self.prompt_max_chars = prompt_max_chars
        self.keep_response_text = keep_response_text
        self.on_progress = on_progress
        self.batch_input = batch_input
        self.batch_account = batch_account
        self.stats = IngestStats()
        self._sql = slow_normalize_sql("_dg_lines", with_text=keep_response_text, prompt_max_chars=prompt_max_chars)
        # Most lines take the fast path (one parse; a second one for the response text): see fast_normalize_sql.
        self._fast_sql = fast_normalize_sql("_dg_lines", prompt_max_chars=prompt_max_chars, with_text=keep_response_text)

    # -- line sources -----------------------------------------------------------------------
    def _chunks(self, path: Path, fmt: str) -> Iterator[LineChunk]:
        if fmt == "traffic":
            yield from iter_line_chunks(path, chunk_bytes=self.chunk_bytes, first_chunk_bytes=self.first_chunk_bytes)
        elif fmt == "parquet":
            from distillguard.ingest.formats import parquet_line_chunks

            yield from parquet_line_chunks(path, self.con)
        elif fmt == "litellm":
            from distillguard.ingest.formats import litellm_line_chunks

            yield from litellm_line_chunks(path, self.rejects)
        elif fmt == "openai-batch":
            from distillguard.ingest.formats import openai_batch_line_chunks

            yield from openai_batch_line_chunks(path, self.rejects, input_path=self.batch_input, account_id=self.batch_account)
        else:  # pragma: no cover - guarded in __init__
            raise InputError(f"unknown format {fmt!r}")

    def iter_batches(self, paths: list[str | Path]) -> Iterator[pa.Table]:
        """Yield one Arrow table of accepted events per chunk of input; rejects go to the writer."""
        for p in paths:
            path = Path(p)
            if not path.exists():
                raise InputError(f"input not found: {path}. Check the path.")
            if path.is_dir():
                raise InputError(f"{path} is a folder; pass the log files in it (e.g. {path}/*.jsonl).")
            fmt = self.fmt if self.fmt != "auto" else sniff_format(path)
            self.stats.files += 1
            file_stats = self.stats.per_file.setdefault(str(path), {"lines": 0, "accepted": 0, "rejected": 0})
            cut_line = None  # (an empty file has no chunk)
            try:
                for chunk in self._chunks(path, fmt):
                    cut_line = yield from self._normalise_chunk(str(path), chunk, file_stats)
                if cut_line is not None:  # only the last chunk can end inside a line
                    # a plain log cut short: nothing but its last line shows it (a compressed one raises)
                    self.stats.damaged.append(f"{path}: the file ends inside line {cut_line:,}, which is not a whole "
                                              f"record (cut short mid-write?); the {cut_line - 1:,} lines before it were read")
                    file_stats["damaged"] = 1
            except DamagedStream as e:
                # a log cut short (a crash mid-write) or corrupt: its lines before the damage are in,
                # the damage is reported where the rejected lines are, and the other files are read
                self.rejects.write_many([(str(path), e.line_no, str(e), None)])
                self.stats.damaged.append(str(e))
                file_stats["damaged"] = 1

    def _normalise_chunk(self, source: str, chunk: LineChunk, file_stats: dict[str, int]) -> Generator[pa.Table, None, int | None]:
        """Yield the chunk's accepted events; return the number of its last line when the file ends inside
        that line and it does not parse (a log cut short), else None."""
        n = len(chunk.lines)
        self.stats.lines += n
        self.stats.bytes += chunk.nbytes
        file_stats["lines"] += n
        if chunk.bad_utf8:
            self.rejects.write_many((source, ln, "line is not valid UTF-8", raw) for ln, raw in chunk.bad_utf8)
            self.stats.rejected += len(chunk.bad_utf8)
            file_stats["rejected"] += len(chunk.bad_utf8)
        if chunk.too_long:
            self.rejects.write_many((source, ln, why, head) for ln, why, head in chunk.too_long)
            self.stats.rejected += len(chunk.too_long)
            file_stats["rejected"] += len(chunk.too_long)
        blank = chunk.lines.null_count - len(chunk.bad_utf8) - len(chunk.too_long)
        self.stats.blank += blank
        import numpy as np

        line_no = pa.array(np.arange(chunk.first_line, chunk.first_line + n, dtype=np.int64))
        # Blank lines stay in (NULL): the SQL skips them, so the line text is never copied here.
        lines = pa.Table.from_arrays([line_no, chunk.lines], names=["line_no", "line"])
        # DuckDB scans an Arrow table in parallel by record batch: hand it many small ones.
        lines = pa.Table.from_batches(lines.to_batches(max_chunksize=2048), schema=lines.schema)
        result = self._normalise_lines(lines)
        reason = result.column("reason")
        n_bad = len(reason) - reason.null_count
        cut_line = None
        if n_bad:
            bad_mask = pc.is_valid(reason)
            bad = result.filter(bad_mask).select(["line_no", "reason"])
            raw = _lines_at(lines, bad.column("line_no"))
            bad_no, why = bad.column("line_no").to_pylist(), bad.column("reason").to_pylist()
            last = chunk.first_line + n - 1
            if chunk.open_end and bad_no[-1] == last and why[-1] == NOT_JSON:
                why[-1] = NOT_JSON_AT_END
                cut_line = last
            self.rejects.write_many((source, ln, w, text) for ln, w, text in zip(bad_no, why, raw))
            self.stats.rejected += n_bad
            file_stats["rejected"] += n_bad
            result = result.filter(pc.invert(bad_mask))
        events = result.drop_columns(["line_no", "reason"])  # typed as EVENT_SCHEMA by the SQL
        if events.schema != EVENT_SCHEMA:  # pragma: no cover - a DuckDB that maps the types otherwise
            events = events.cast(EVENT_SCHEMA)
        events = events.append_column("_src", pa.repeat(pa.scalar(source, pa.string()), events.num_rows))
        events = events.append_column("_line", result.column("line_no"))
        self.stats.accepted += events.num_rows
        file_stats["accepted"] += events.num_rows
        if self.on_progress:
            self.on_progress(chunk.nbytes)
        if events.num_rows:
            yield events
        return cut_line

    def _run(self, sql: str, lines: pa.Table) -> pa.Table:
        self.con.register("_dg_lines", lines)
        try:
            return self.con.sql(sql).to_arrow_table()
        finally:
            self.con.unregister("_dg_lines")

    def _normalise_lines(self, lines: pa.Table) -> pa.Table:
        """``line_no, reason, <event columns>`` for every non-NULL line of ``lines`` (``line_no, line``), in line order."""
        if self._fast_sql is None:  # every line through the slow path (the tests compare the two paths so)
            return self._run(self._sql, lines)
        fast = self._run(self._fast_sql, lines)
        is_fast = fast.column("fast")
        fast = fast.drop_columns(["fast"])
        if is_fast.null_count == 0 and pc.all(is_fast).as_py() is not False:
            return fast
        # The few lines the fast path does not take go through the slow path, and back in line order.
        slow_no = fast.column("line_no").filter(pc.invert(is_fast))
        slow = self._run(self._sql, lines.filter(pc.is_in(lines.column("line_no"), value_set=slow_no.combine_chunks())))
        both = pa.concat_tables([fast.filter(is_fast), slow])
        return both.take(pc.sort_indices(both.column("line_no")))
