"""The event store: a DuckDB table of events, idempotent on ``request_id``.

Appends go straight into the table; at the end of each run one pass finds the request ids that were
already present (from an earlier run or earlier in this run), removes the later copies and reports
them as rejected duplicates. Re-ingesting a file therefore adds nothing, and memory stays bounded by
one input chunk (DuckDB spills to disk for the dedupe pass).

An in-memory store may instead keep a log that fits a byte budget as the Arrow batches the reader
made (``keep_in_memory``): ``events`` is then a view of them. The table's insert compresses every row
group, about a quarter of the reading's CPU time (300k requests: about 4 of 13 CPU seconds), for a table
that a one-off scan reads a few times and drops. A log past the budget goes into the table as before,
so memory stays bounded. Such a view is seen by the store's own connection (``store.con``) only: a
registered Arrow table belongs to one connection, not to its cursors.
"""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


_MEMORY_LIMIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)


def check_memory_limit(text: str) -> str:
    """``text`` as DuckDB's ``memory_limit`` takes it (``3GB``, ``512MiB``), or a clear error.

    >>> check_memory_limit(" 16 gb"), check_memory_limit("1.5GiB")
    ('16gb', '1.5GiB')
    """
    m = _MEMORY_LIMIT.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"memory limit {text!r} is not a size: give a number and a unit, e.g. 3GB, 512MB or 16GiB")
    return m.group(1) + m.group(2)


_MEMORY_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def memory_limit_bytes(con: duckdb.DuckDBPyConnection) -> int | None:
    """DuckDB's memory limit in bytes (None for a format it does not recognise).

    >>> c = duckdb.connect(); _ = c.execute("SET memory_limit = '3GB'"); memory_limit_bytes(c) > 2 * 2**30
    True
    """
    text = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    num, _, unit = str(text).partition(" ")
    try:
        return int(float(num) * _MEMORY_UNITS[unit])
    except (ValueError, KeyError):
        return None


#: DuckDB failures that :func:`resource_failure` turns into a clear error.
RESOURCE_ERRORS = (duckdb.IOException, duckdb.OutOfMemoryException)


class EventStore:
    """Events in DuckDB (a file, or memory).

    >>> s = EventStore(":memory:")
    >>> s.count()
    0
    """

    def __init__(self, database: str | Path = ":memory:", *, memory_limit: str | None = None,
                 temp_directory: str | Path | None = None, keep_in_memory: float = 0.0):
        """``keep_in_memory``: for an in-memory store, a run's events are kept as Arrow batches rather than
        inserted (see the module's docstring) while they take at most this share of the memory limit;
        past it, all of them go to the table."""
        self.database = str(database)
        self._budget = 0
        self._kept: deque[pa.Table] = deque()  # this run's batches while they fit the budget; then those not yet inserted
        self._kept_bytes = 0
        self._arrow: pa.Table | None = None  # the kept events once the run is finished (``events`` is a view of them)
        self._limit: int | None = None  # DuckDB's memory limit before the kept events took their share of it
        try:
            self.con: duckdb.DuckDBPyConnection = connect(self.database, memory_limit=memory_limit, temp_directory=temp_directory)
        except duckdb.Error as e:
            raise InputError(f"cannot open the DuckDB store {self.database}: {e}") from e
        if keep_in_memory > 0 and self.database == ":memory:":
            self._budget = int(keep_in_memory * (memory_limit_bytes(self.con) or 0))
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
        if self._arrow is not None:  # a run finished in memory, and more events: into the table with them
            self._to_table()
        if self._budget:
            if self._kept_bytes + batch.nbytes <= self._budget:
                self._kept.append(batch)
                self._kept_bytes += batch.nbytes
                return
            self._budget = 0  # past the budget: the whole run goes to the table, the kept batches first
        if self._kept:
            # two kept batches in for each new one, not all at once: the reader, one batch ahead, would
            # wait through the whole backlog's inserts (1.5M requests: about 15 s)
            self._kept.append(batch)
            for _ in range(min(2, len(self._kept))):
                self._insert(self._kept.popleft())
            return
        self._insert(batch)

    def _insert(self, batch: pa.Table) -> None:
        _dg_batch = batch  # noqa: F841 - referenced by name in SQL
        self.con.register("_dg_batch", batch)
        try:
            self.con.execute(f"INSERT INTO events SELECT *, {int(self.run)} AS _run FROM _dg_batch")
        finally:
            self.con.unregister("_dg_batch")

    def _view_kept(self) -> None:
        """``events`` becomes a view of the batches kept in memory (with a ``_pos`` column that numbers them)."""
        kept, self._kept = list(self._kept), deque()
        if kept:
            t = pa.concat_tables(kept)
        else:
            t = self.con.sql("SELECT * EXCLUDE (_run) FROM events LIMIT 0").to_arrow_table()
        t = t.append_column("_run", pa.repeat(pa.scalar(int(self.run), pa.int32()), t.num_rows))
        self._arrow = t.append_column("_pos", pa.array(np.arange(t.num_rows, dtype=np.int64)))
        self.con.execute("DROP TABLE events")
        self.con.register("_dg_events_arrow", self._arrow)
        self.con.execute("CREATE VIEW events AS SELECT * EXCLUDE (_pos) FROM _dg_events_arrow")
        # the kept events count against the store's memory limit: DuckDB gets the rest
        self._limit = limit = memory_limit_bytes(self.con)
        if limit is not None:
            self.con.execute(f"SET memory_limit = '{max(limit - self._arrow.nbytes, limit // 4)}B'")

    def _to_table(self) -> None:
        """The events kept in memory go into the ``events`` table (it replaces the view)."""
        self.con.execute("DROP VIEW events")
        self.con.execute(events_ddl())
        self.con.execute("INSERT INTO events SELECT * EXCLUDE (_pos) FROM _dg_events_arrow")
        self.con.unregister("_dg_events_arrow")
        self._arrow, self._budget = None, 0
        if self._limit is not None:
            self.con.execute(f"SET memory_limit = '{self._limit}B'")

    def delete_where(self, condition: str) -> int:
        """Delete the events for which SQL ``condition`` holds; returns how many."""
        if self._arrow is None:
            return self.con.execute(f"DELETE FROM events WHERE {condition}").fetchall()[0][0]
        gone = self.con.sql(f"SELECT _pos AS rid FROM _dg_events_arrow WHERE {condition}").to_arrow_table()
        self._delete_rows(gone)
        return gone.num_rows

    def _delete_rows(self, rids: pa.Table) -> None:
        """Delete the events whose row id is in ``rids.rid``: the table's ``rowid``, or the kept events' ``_pos``."""
        if rids.num_rows == 0:
            return
        if self._arrow is not None:
            keep = pc.invert(pc.is_in(self._arrow.column("_pos"), value_set=rids.column("rid").combine_chunks()))
            self._arrow = self._arrow.filter(keep)
            self.con.register("_dg_events_arrow", self._arrow)
            return
        self.con.register("_dg_rids", rids)
        try:
            self.con.execute("DELETE FROM events WHERE rowid IN (SELECT rid FROM _dg_rids)")
        finally:
            self.con.unregister("_dg_rids")

    def finish_run(self, rejects: RejectWriter | None = None) -> int:
        """Remove request ids seen before; report each as a rejected duplicate. Returns the count."""
        if self._budget and self._arrow is None:  # every event of the run fitted the budget
            self._view_kept()
        while self._kept:  # the rest of the backlog of a run past the budget
            self._insert(self._kept.popleft())
        if self._arrow is not None:  # one run, in memory: the first copy is the first in reading order
            source = """SELECT _pos AS rid, request_id, _src, _line, row_number() OVER w AS rn,
                     first_value(_src) OVER w AS first_src, first_value(_line) OVER w AS first_line
              FROM _dg_events_arrow WINDOW w AS (PARTITION BY request_id ORDER BY _pos)"""
        else:
            source = f"""SELECT e.rowid AS rid, e.request_id, e._src, e._line, e._run,
                     row_number() OVER w AS rn,
                     first_value(e._src) OVER w AS first_src,
                     first_value(e._line) OVER w AS first_line
              FROM events e SEMI JOIN (SELECT DISTINCT request_id FROM events WHERE _run = {int(self.run)}) cur
                ON e.request_id = cur.request_id
              WINDOW w AS (PARTITION BY e.request_id ORDER BY e._run, e.rowid)"""
        dup = self.con.sql(
            f"""SELECT rid, request_id, _src, _line, first_src, first_line FROM ({source}) WHERE rn > 1 ORDER BY _src, _line"""
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
        self._delete_rows(dup.select(["rid"]))
        return dup.num_rows

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM events").fetchall()[0][0]

    def close(self) -> None:
        self.con.close()
