"""The event store: a DuckDB table of events, idempotent on ``request_id``.

Appends go straight into the table; at the end of each run one pass finds the request ids that were
already present (from an earlier run or earlier in this run), removes the later copies and reports
them as rejected duplicates. Re-ingesting a file therefore adds nothing, and memory stays bounded by
one input chunk (DuckDB spills to disk for the dedupe pass).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from distillguard.errors import InputError
from distillguard.ingest.reader import EventReader, connect
from distillguard.ingest.rejects import RejectWriter
from distillguard.prefetch import prefetched
from distillguard.schema import EVENT_SCHEMA

_DDL_TYPES = {
    pa.string(): "VARCHAR",
    pa.float64(): "DOUBLE",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.bool_(): "BOOLEAN",
}


def events_ddl(table: str = "events") -> str:
    cols = [f"{f.name} {_DDL_TYPES[f.type]}" for f in EVENT_SCHEMA]
    cols += ["_src VARCHAR", "_line BIGINT", "_run INTEGER"]
    return f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"


def resource_failure(e: Exception, temp_directory: str | Path, memory_limit: str | None = None) -> InputError:
    """The one-line error for a DuckDB failure that is the machine's, not the input's: the disk under
    the spill folder full, or memory exhausted. (Everything else DuckDB raises is a bug to report.)

    >>> str(resource_failure(duckdb.IOException('IO Error: Could not write file "x.tmp": No space left on device'), "/tmp/w"))[:58]
    'out of disk space for the spill files in /tmp/w (DuckDB: I'
    """
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, duckdb.OutOfMemoryException):
        limit = f" under its limit of {memory_limit}" if memory_limit else ""
        return InputError(f"out of memory: DuckDB could not fit a step that cannot spill to disk{limit} ({first}); "
                          "scan the logs in smaller parts (fewer days at a time) or on a machine with more memory")
    return InputError(f"out of disk space for the spill files in {temp_directory} (DuckDB: {first}); free space "
                      "there or point TMPDIR at a larger disk")


#: DuckDB failures that :func:`resource_failure` turns into a clear error.
RESOURCE_ERRORS = (duckdb.IOException, duckdb.OutOfMemoryException)


class EventStore:
    """Events in DuckDB (a file, or memory).

    >>> s = EventStore(":memory:")
    >>> s.count()
    0
    """

    def __init__(self, database: str | Path = ":memory:", *, memory_limit: str | None = None,
                 temp_directory: str | Path | None = None):
        self.database = str(database)
        try:
            self.con: duckdb.DuckDBPyConnection = connect(self.database, memory_limit=memory_limit, temp_directory=temp_directory)
        except duckdb.Error as e:
            raise InputError(f"cannot open the DuckDB store {self.database}: {e}") from e
        self.con.execute(events_ddl())
        self.con.execute("CREATE TABLE IF NOT EXISTS runs (run INTEGER, started DOUBLE, inputs VARCHAR)")
        self.run = (self.con.execute("SELECT coalesce(max(run), 0) + 1 FROM runs").fetchall()[0][0])
        self.con.execute("INSERT INTO runs VALUES (?, epoch(now()), '')", [self.run])

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Another connection to this store's database (for an :class:`EventReader` of :meth:`append_all`)."""
        return self.con.cursor()

    def append_all(self, reader: "EventReader", paths: list[str | Path]) -> None:
        """Append every batch that ``reader`` makes of ``paths``, in order.

        A reader on its own connection (``EventReader(con=store.cursor())``) normalises the next
        chunk on a thread while this one is inserted: DuckDB compresses each full row group on the
        inserting thread, and the two overlap on two cores (300k requests: 8.5 s serial, 5.8 s).
        A reader on ``self.con`` itself runs in turn with the inserts."""
        made = reader.iter_batches(list(paths))
        batches = made if reader.con is self.con else prefetched(lambda: made, name="distillguard-normalise")
        for batch in batches:
            self.append(batch)

    def append(self, batch: pa.Table) -> None:
        _dg_batch = batch  # noqa: F841 - referenced by name in SQL
        self.con.register("_dg_batch", batch)
        try:
            self.con.execute(f"INSERT INTO events SELECT *, {int(self.run)} AS _run FROM _dg_batch")
        finally:
            self.con.unregister("_dg_batch")

    def finish_run(self, rejects: RejectWriter | None = None) -> int:
        """Remove request ids seen before; report each as a rejected duplicate. Returns the count."""
        dup = self.con.sql(
            f"""
            WITH cur AS (SELECT DISTINCT request_id FROM events WHERE _run = {int(self.run)}),
            ranked AS (
              SELECT e.rowid AS rid, e.request_id, e._src, e._line, e._run,
                     row_number() OVER w AS rn,
                     first_value(e._src) OVER w AS first_src,
                     first_value(e._line) OVER w AS first_line
              FROM events e SEMI JOIN cur ON e.request_id = cur.request_id
              WINDOW w AS (PARTITION BY e.request_id ORDER BY e._run, e.rowid)
            )
            SELECT rid, request_id, _src, _line, first_src, first_line FROM ranked WHERE rn > 1 ORDER BY _src, _line
            """
        ).to_arrow_table()
        if dup.num_rows == 0:
            return 0
        if rejects is not None:
            rows = dup.to_pylist()
            rejects.write_many(
                (
                    r["_src"],
                    r["_line"],
                    f"duplicate request_id {r['request_id']!r} (first seen in {r['first_src']} line {r['first_line']})",
                    None,
                )
                for r in rows
            )
        self.con.register("_dg_dup", dup.select(["rid"]))
        try:
            self.con.execute("DELETE FROM events WHERE rowid IN (SELECT rid FROM _dg_dup)")
        finally:
            self.con.unregister("_dg_dup")
        return dup.num_rows

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM events").fetchall()[0][0]

    def close(self) -> None:
        self.con.close()
