"""The optional account file (contracts.md §1): one JSON object per account, joined on ``account_id``."""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from distillguard.errors import RecordRejected
from distillguard.ingest.lines import read_all_bytes
from distillguard.ingest.rejects import RejectWriter
from distillguard.schema import ACCOUNT_SCHEMA, parse_timestamp

_STRING_FIELDS = ("payment_fingerprint", "email_domain", "country", "tier")


def account_from_record(rec: object) -> dict:
    """Validate and type one account record.

    >>> account_from_record({"account_id": "a", "created_at": "2026-01-01T00:00:00Z", "verified": True})["created_at"]
    1767225600.0
    >>> account_from_record({"account_id": "a", "created_at": "yesterday"})
    Traceback (most recent call last):
    ...
    distillguard.errors.RecordRejected: account field 'created_at' is not RFC 3339: 'yesterday'
    """
    if not isinstance(rec, dict):
        raise RecordRejected("account record is not a JSON object")
    aid = rec.get("account_id")
    if not isinstance(aid, str) or not aid:
        raise RecordRejected("account record lacks a string 'account_id'")
    out = {"account_id": aid}
    created = rec.get("created_at")
    try:
        out["created_at"] = parse_timestamp(created) if created is not None else None
    except RecordRejected as e:  # its reason names the traffic log's field
        raise RecordRejected("account " + e.reason.replace("field 'timestamp'", "field 'created_at'")) from None
    for name in _STRING_FIELDS:
        v = rec.get(name)
        if v is not None and not isinstance(v, str):
            raise RecordRejected(f"account field '{name}' has wrong type")
        out[name] = v
    v = rec.get("verified")
    if v is not None and not isinstance(v, bool):
        raise RecordRejected("account field 'verified' has wrong type")
    out["verified"] = v
    return out


def load_accounts(path: str | Path, *, rejects: RejectWriter | None = None) -> pa.Table:
    """Read an account file; bad lines go to ``rejects``. Later lines for one account win."""
    rows: dict[str, dict] = {}
    damage: list[BaseException] = []
    lines = read_all_bytes(path, damage=damage).split(b"\n")
    if damage and rejects is not None:  # the accounts before it are kept
        rejects.write(str(path), len(lines) + 1, f"account file is damaged after line {len(lines)}: {damage[0]}", None)
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            r = account_from_record(orjson.loads(raw))
            rows[r["account_id"]] = r
        except orjson.JSONDecodeError:
            if rejects is not None:
                rejects.write(str(path), i, "account line is not valid JSON", raw)
        except RecordRejected as e:
            if rejects is not None:
                rejects.write(str(path), i, e.reason, raw)
    return pa.Table.from_pylist(list(rows.values()), schema=ACCOUNT_SCHEMA)


def accounts_by_id(path: str | Path | None, *, rejects: RejectWriter | None = None) -> dict[str, dict]:
    """:func:`load_accounts` as ``{account_id: row}`` (what the online detector takes); no path: empty."""
    if path is None:
        return {}
    return {r["account_id"]: r for r in load_accounts(path, rejects=rejects).to_pylist()}
