"""API keys: held only as SHA-256 hashes, mapped to accounts.

Example:

>>> ks = KeyStore()
>>> info = ks.add(api_key="sk-test", account_id="acme", api_key_id="k1")
>>> ks.lookup("sk-test").account_id, ks.lookup("nope")
('acme', None)
>>> "sk-test" in repr(ks)
False
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path

import orjson

from distillguard.errors import ConfigError
from distillguard.schema import UNAUTHENTICATED_ACCOUNT

__all__ = ["UNAUTHENTICATED", "KeyInfo", "KeyStore", "hash_key"]

#: the ``account_id`` of log records refused at authentication without a known key; no key may use it
UNAUTHENTICATED = UNAUTHENTICATED_ACCOUNT


def hash_key(api_key: str) -> str:
    """Hex SHA-256 of a key: what is kept in memory instead of the key."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    account_id: str
    api_key_id: str
    revoked: bool = False


class KeyStore:
    """Hashed key → :class:`KeyInfo`. Never stores or returns a key in clear."""

    def __init__(self) -> None:
        self._by_hash: dict[str, KeyInfo] = {}

    def __repr__(self) -> str:
        return f"KeyStore({len(self._by_hash)} keys)"

    def __len__(self) -> int:
        return len(self._by_hash)

    def add(self, *, api_key: str, account_id: str, api_key_id: str | None = None) -> KeyInfo:
        if not api_key or not account_id:
            raise ConfigError("a key needs a non-empty 'api_key' and 'account_id'")
        if account_id == UNAUTHENTICATED:
            raise ConfigError(f"account_id {UNAUTHENTICATED!r} is reserved for requests without a valid key; "
                              "choose another account id")
        h = hash_key(api_key)
        info = KeyInfo(account_id=account_id, api_key_id=api_key_id or "key_" + h[:12])
        self._by_hash[h] = info
        return info

    def add_hashed(self, *, key_hash: str, account_id: str, api_key_id: str) -> None:
        """Add a key known only by its hash (shared by another gateway through Redis)."""
        if key_hash not in self._by_hash:
            self._by_hash[key_hash] = KeyInfo(account_id=account_id, api_key_id=api_key_id)

    def create(self, *, account_id: str, api_key_id: str | None = None) -> tuple[str, KeyInfo]:
        """Make a new random key for ``account_id``; the key is returned once and not kept."""
        key = "sk-dg-" + secrets.token_urlsafe(32)
        return key, self.add(api_key=key, account_id=account_id, api_key_id=api_key_id)

    def revoke(self, api_key_id: str) -> int:
        """Revoke every key with this id; returns how many were revoked."""
        n = 0
        for h, info in self._by_hash.items():
            if info.api_key_id == api_key_id and not info.revoked:
                self._by_hash[h] = KeyInfo(info.account_id, info.api_key_id, revoked=True)
                n += 1
        return n

    def lookup(self, api_key: str) -> KeyInfo | None:
        """The key's info, or None when unknown (revoked keys are returned with ``revoked=True``)."""
        return self._by_hash.get(hash_key(api_key))

    def list(self) -> list[dict]:
        return [{"api_key_id": i.api_key_id, "account_id": i.account_id, "revoked": i.revoked}
                for i in self._by_hash.values()]

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "KeyStore":
        """Load ``{"api_key", "account_id", "api_key_id"}`` lines; a bad line is a :class:`ConfigError`."""
        ks = cls()
        p = Path(path)
        try:
            lines = p.read_bytes().splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read keys file {p}: {e.strerror}; pass --keys KEYS.jsonl") from None
        for no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError(f"{p}:{no}: not JSON; each line must be an object with api_key and account_id") from None
            if not isinstance(row, dict) or not isinstance(row.get("api_key"), str) or not isinstance(row.get("account_id"), str):
                raise ConfigError(f"{p}:{no}: needs string fields 'api_key' and 'account_id'")
            kid = row.get("api_key_id")
            ks.add(api_key=row["api_key"], account_id=row["account_id"], api_key_id=kid if isinstance(kid, str) else None)
        return ks
