"""Readers for every input format, all yielding Arrow batches of the canonical event schema."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from distillguard.ingest.accounts import accounts_by_id, load_accounts
from distillguard.ingest.reader import EventReader, IngestStats, connect, sniff_format
from distillguard.ingest.rejects import RejectWriter
from distillguard.ingest.store import EventStore
from distillguard.schema import EVENT_SCHEMA

__all__ = ["EventReader", "EventStore", "IngestStats", "RejectWriter", "accounts_by_id", "connect", "load_accounts", "load_events", "sniff_format"]


def load_events(paths: list[str | Path], *, rejects_path: str | Path | None = None, fmt: str = "auto") -> pa.Table:
    """All accepted events of ``paths`` as one in-memory Arrow table (small and medium logs).

    Duplicated request ids keep their first occurrence. Rejected lines go to ``rejects_path``
    (default: a temporary file that is discarded).
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        with RejectWriter(rejects_path or Path(tmp) / "rejected.jsonl") as rej:
            store = EventStore(":memory:")
            store.append_all(EventReader(rejects=rej, con=store.cursor(), fmt=fmt), paths)
            store.finish_run(rej)
            table = store.con.sql(f"SELECT {', '.join(EVENT_SCHEMA.names)} FROM events ORDER BY ts, request_id").to_arrow_table()
            store.close()
    return table.cast(EVENT_SCHEMA)
