"""The event store: a DuckDB table of events, idempotent on ``request_id``.

Appends are gathered into inserts of about one DuckDB row group (122,880 rows; a row group filled by one
insert costs DuckDB a third of the CPU time that many small inserts cost it) and go into the table in
order; at the end of each run one pass finds the request ids that were already present (from an
earlier run or earlier in this run), removes the later copies and reports them as rejected duplicates.
Re-ingesting a file therefore adds nothing, and memory stays bounded by one row group of events plus
one input chunk (DuckDB spills to disk for the dedupe pass).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from distillguard.errors import InputError
from distillguard.ingest.reader import connect
from distillguard.ingest.rejects import RejectWriter
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


class EventStore:
    """Events in DuckDB (a file, or memory).

    Appended batches may wait in memory (see :attr:`APPEND_ROWS`); :meth:`flush`, :meth:`finish_run`,
    :meth:`count`, :meth:`close` and every use of :attr:`con` put them in the table first.

    >>> s = EventStore(":memory:")
    >>> s.count()
    0
    """

    #: Appends are held until this many rows (one DuckDB row group) ...
    APPEND_ROWS = 122_880
    #: ... or this many bytes of Arrow data have come, then inserted with one statement.
    APPEND_BYTES = 128 << 20

    def __init__(self, database: str | Path = ":memory:", *, memory_limit: str | None = None,
                 temp_directory: str | Path | None = None):
        self.database = str(database)
        try:
            self._con: duckdb.DuckDBPyConnection = connect(self.database, memory_limit=memory_limit, temp_directory=temp_directory)
        except duckdb.Error as e:
            raise InputError(f"cannot open the DuckDB store {self.database}: {e}") from e
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._con.execute(events_ddl())
        self._con.execute("CREATE TABLE IF NOT EXISTS runs (run INTEGER, started DOUBLE, inputs VARCHAR)")
        self.run = (self._con.execute("SELECT coalesce(max(run), 0) + 1 FROM runs").fetchall()[0][0])
        self._con.execute("INSERT INTO runs VALUES (?, epoch(now()), '')", [self.run])

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection, with every appended batch in ``events``."""
        self.flush()
        return self._con

    def append(self, batch: pa.Table) -> None:
        """Add events (:data:`EVENT_SCHEMA` columns, then ``_src`` and ``_line``), in order after those before."""
        if self._pending and batch.schema != self._pending[0].schema:
            self.flush()
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self.APPEND_ROWS or self._pending_bytes >= self.APPEND_BYTES:
            self.flush()

    def flush(self) -> None:
        """Insert the appended batches that are still waiting."""
        if not self._pending:
            return
        batch = self._pending[0] if len(self._pending) == 1 else pa.concat_tables(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        _dg_batch = batch  # noqa: F841 - referenced by name in SQL
        self._con.register("_dg_batch", batch)
        try:
            self._con.execute(f"INSERT INTO events SELECT *, {int(self.run)} AS _run FROM _dg_batch")
        finally:
            self._con.unregister("_dg_batch")

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
        self.flush()
        self._con.close()
