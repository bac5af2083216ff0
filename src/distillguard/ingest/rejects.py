"""``rejected.jsonl``: every input line that could not be used, with its line number and the reason."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import orjson

from distillguard.errors import InputError
from distillguard.schema import RAW_PREVIEW_CHARS


class RejectWriter:
    """Append-only writer of rejected lines; counts reasons for the summary.

    >>> import tempfile, os
    >>> w = RejectWriter(os.path.join(tempfile.mkdtemp(), "rejected.jsonl"))
    >>> w.write("log.jsonl", 3, "line is not valid JSON", "{oops")
    >>> w.close(); w.total, dict(w.reasons)
    (1, {'line is not valid JSON': 1})
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "ab")
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}. Choose a writable --out folder.") from e
        self.total = 0
        self.reasons: Counter[str] = Counter()

    @staticmethod
    def _reason_key(reason: str) -> str:
        # Group "field 'x' has wrong type: bool" and similar by their stable prefix.
        return reason.split(":", 1)[0]

    def write(self, source: str, line: int | None, reason: str, raw: str | bytes | None) -> None:
        self.write_many([(source, line, reason, raw)])

    def write_many(self, rows: Iterable[tuple[str, int | None, str, str | bytes | None]]) -> None:
        out = bytearray()
        for source, line, reason, raw in rows:
            if isinstance(raw, bytes):
                raw = raw[: RAW_PREVIEW_CHARS * 4].decode("utf-8", errors="replace")
            preview = raw[:RAW_PREVIEW_CHARS] if raw is not None else None
            rec = {"source": source, "line": line, "reason": reason, "raw": preview}
            if raw is not None and len(raw) > RAW_PREVIEW_CHARS:
                rec["raw_truncated_from_chars"] = len(raw)
            out += orjson.dumps(rec) + b"\n"
            self.total += 1
            self.reasons[self._reason_key(reason)] += 1
        if out:
            self._f.write(out)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "RejectWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
