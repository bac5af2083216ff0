"""The traffic-log writer: records batched off the request path, flushed at a bounded interval.

``put(record)`` encodes the record with orjson (a few microseconds, on the caller's thread, so that
the writer thread never holds the GIL for long while the event loop waits for it) and appends the
bytes to a deque (thread-safe, no I/O). A writer thread wakes every ``flush_interval_s``, joins the
batch and writes it with one ``write`` call (which releases the GIL) to
the current ``*.jsonl`` file; once written, a record survives a ``kill -9`` of the process (it sits in
the kernel's page cache), so at most one interval of records is lost. ``fsync=True`` also protects
against a machine crash, at a cost per flush. A write that fails (a full disk) keeps what it did not
write and retries it first at the next flush, so records come out whole, once and in order when the
disk has room again; past ``max_backlog_bytes`` the oldest are dropped and counted (``dropped``).

Files are ``traffic-<UTC start>-<pid>-<seq>.jsonl`` (the pid lets several gateways share one folder).
They rotate when larger than ``max_bytes`` or older than ``max_age_s``; a rotated file is
gzip-compressed to ``.jsonl.gz`` when ``compress_rotated`` is set.

Example:

>>> import tempfile, pathlib
>>> d = tempfile.mkdtemp()
>>> sink = LogSink(log_dir=d, flush_interval_s=0.05).start()
>>> sink.put({"request_id": "r1"})
>>> sink.close()
>>> [p.read_text() for p in pathlib.Path(d).glob("*.jsonl")]
['{"request_id":"r1"}\\n']
"""

from __future__ import annotations

import gzip
import os
import shutil
import sys
import threading
import time
from collections import deque
from pathlib import Path

import orjson

from distillguard.errors import InputError

__all__ = ["LogSink"]


class LogSink:
    def __init__(self, *, log_dir: str | Path, flush_interval_s: float = 0.2, max_bytes: int = 256 << 20,
                 max_age_s: float = 3600.0, compress_rotated: bool = True, fsync: bool = False,
                 max_backlog_bytes: int = 256 << 20):
        self.log_dir = Path(log_dir)
        self.flush_interval_s = flush_interval_s
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.compress_rotated = compress_rotated
        self.fsync = fsync
        self._q: deque = deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._path: Path | None = None
        self._opened_at = 0.0
        self._size = 0
        self._seq = 0
        self.max_backlog_bytes = max_backlog_bytes
        self._backlog = b""  # encoded records a failed write left, written first at the next flush
        self._ends_mid = False  # the current file ends inside a record (a write stopped there)
        self.written = 0
        self.errors = 0
        self.dropped = 0  # records dropped past max_backlog_bytes while writes failed
        self.files_rotated = 0

    @property
    def pending(self) -> int:
        return len(self._q) + self._backlog.count(b"\n")

    def start(self) -> "LogSink":
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            probe = self.log_dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise InputError(f"log dir {self.log_dir} is not writable ({e.strerror}); pass a writable --log-dir") from None
        self._thread = threading.Thread(target=self._run, name="distillguard-logsink", daemon=True)
        self._thread.start()
        return self

    def put(self, record: dict) -> None:
        try:
            line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        except TypeError:  # a value orjson cannot encode: written as its str(), counted
            self.errors += 1
            line = orjson.dumps(record, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
        self._q.append(line)

    def _open(self) -> None:
        self._seq += 1
        self._ends_mid = False
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self._path = self.log_dir / f"traffic-{stamp}-{os.getpid()}-{self._seq:04d}.jsonl"
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._opened_at = time.monotonic()
        self._size = 0

    def _rotate(self) -> None:
        if self._fd is None or self._path is None:
            return
        os.close(self._fd)
        self._fd = None
        done = self._path
        self._path = None
        self.files_rotated += 1
        if self.compress_rotated and done.stat().st_size > 0:
            gz = done.with_suffix(".jsonl.gz")
            tmp = gz.with_suffix(".gz.tmp")
            with open(done, "rb") as src, gzip.open(tmp, "wb", compresslevel=5) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, gz)
            done.unlink()

    def _flush(self) -> None:
        n = len(self._q)
        if not n and not self._backlog:
            if self._fd is not None and time.monotonic() - self._opened_at > self.max_age_s and self._size:
                self._rotate()
            return
        popleft = self._q.popleft
        data = self._backlog + b"".join([popleft() for _ in range(n)])
        self._backlog = b""
        view = memoryview(data)
        try:
            if self._fd is None:
                self._open()
            assert self._fd is not None
            while view:
                w = os.write(self._fd, view)
                if w:
                    self._ends_mid = view[w - 1] != 0x0A  # the file ends inside a record
                view = view[w:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            # a full disk, a removed folder: keep what was not written (from where the write stopped,
            # so a record cut short is completed) and write it first at the next flush
            done = len(data) - len(view)
            self._keep(bytes(view), mid_record=self._ends_mid)
            self._size += done
            self.written += data.count(b"\n", 0, done)  # (all of them where only fsync failed)
            raise
        self._size += len(data)
        self.written += data.count(b"\n")
        if self._size >= self.max_bytes or time.monotonic() - self._opened_at > self.max_age_s:
            self._rotate()

    def _keep(self, rest: bytes, *, mid_record: bool) -> None:
        """Hold ``rest`` for the next flush, at most ``max_backlog_bytes`` of it: past that, the oldest whole
        records are dropped and counted (``dropped``), so that a disk full for hours cannot exhaust memory.
        ``mid_record``: the file ends in the first record of ``rest``, cut short; its end is always kept
        (dropped, the file would join the rest of it to the next record)."""
        head = rest.find(b"\n") + 1 if mid_record else 0
        if len(rest) - head > self.max_backlog_bytes:
            cut = rest.find(b"\n", len(rest) - self.max_backlog_bytes)
            cut = len(rest) if cut < 0 else cut + 1
            self.dropped += rest.count(b"\n", head, cut)
            rest = rest[:head] + rest[cut:]
        self._backlog = rest

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self._try_flush()
        self._try_flush()

    def _try_flush(self) -> bool:
        try:
            self._flush()
            return True
        except OSError:
            self.errors += 1
            return False

    def flush(self) -> None:
        """Write what is pending now (tests and shutdown)."""
        self._flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.pending and not self._try_flush():  # still no room at shutdown: say what is lost
            self.dropped += self.pending
            print(f"distillguard gateway: {self.pending:,} traffic-log records could not be written to "
                  f"{self.log_dir} and are lost (the last write failed)", file=sys.stderr)
            self._q.clear()
            self._backlog = b""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
