"""Watermark keys: the secret, its public id, the scheme parameters, and key rotation.

A key file is JSON (one key) and a key ring is JSON Lines (one key per line, oldest first)::

    {"format": "distillguard-watermark-key/1", "key_id": "wk-2026-11-27-1a2b3c4d",
     "secret": "<64 hex chars>", "scheme": "greenlist", "gamma": 0.25, "delta": 2.0,
     "context_width": 1, "hashing": "lefthash", "vocab_size": 49152,
     "tokenizer": "SmolLM2-135M-Instruct", "created_at": "2026-11-27T15:00:00+00:00",
     "retired_at": null}

Only ``key_id`` ever leaves the key file: the serving side writes it into each traffic-log
record as the optional top-level field ``watermark_key_id``; the secret never appears in logs.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from distillguard.errors import ConfigError

KEY_FORMAT = "distillguard-watermark-key/1"
SCHEMES = ("greenlist", "gumbel")
HASHINGS = ("lefthash", "selfhash")


@dataclass(frozen=True, kw_only=True)
class WatermarkKey:
    """A secret watermark key with its scheme parameters.

    Example:
        >>> k = WatermarkKey.derive(b"demo", key_id="wk-demo", vocab_size=100)
        >>> k.key_id, k.scheme, k.gamma
        ('wk-demo', 'greenlist', 0.25)
        >>> WatermarkKey.from_dict(k.to_dict()) == k
        True
    """

    key_id: str
    secret: bytes = field(repr=False)
    scheme: str = "greenlist"
    gamma: float = 0.25
    delta: float = 2.0
    context_width: int = 1
    hashing: str = "lefthash"
    vocab_size: int = 0
    tokenizer: str = ""
    created_at: str = ""
    retired_at: str | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"watermark scheme {self.scheme!r} unknown; use one of {SCHEMES}")
        if self.hashing not in HASHINGS:
            raise ConfigError(f"hashing {self.hashing!r} unknown; use one of {HASHINGS}")
        if not 0.0 < self.gamma < 1.0:
            raise ConfigError(f"gamma must be in (0, 1), got {self.gamma}")
        if self.delta < 0:
            raise ConfigError(f"delta must be >= 0, got {self.delta}")
        if self.context_width < 1:
            raise ConfigError(f"context_width must be >= 1, got {self.context_width}")
        if len(self.secret) < 16:
            raise ConfigError("the key secret must be at least 16 bytes; generate one with `distillguard provenance keygen`")
        if not self.key_id:
            raise ConfigError("key_id must be a non-empty string")

    @classmethod
    def generate(cls, *, key_id: str | None = None, seed: int | None = None, **params) -> "WatermarkKey":
        """A fresh key: random secret (from ``secrets``, or from ``seed`` for reproducible tests)."""
        if seed is None:
            secret = secrets.token_bytes(32)
        else:
            secret = hashlib.sha256(b"distillguard-seed:" + str(seed).encode()).digest()
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        kid = key_id or f"wk-{now:%Y%m%d}-{hashlib.sha256(secret).hexdigest()[:8]}"
        return cls(key_id=kid, secret=secret, created_at=now.isoformat(), **params)

    @classmethod
    def derive(cls, master: bytes, *, key_id: str, **params) -> "WatermarkKey":
        """A key derived deterministically from ``master`` and ``key_id`` (decoys, tests)."""
        secret = hmac.new(master, b"derive:" + key_id.encode(), hashlib.sha256).digest()
        return cls(key_id=key_id, secret=secret, **params)

    def with_params(self, **params) -> "WatermarkKey":
        """A copy with other scheme parameters (same secret and id)."""
        return replace(self, **params)

    def decoys(self, n: int, *, seed: int = 0) -> list["WatermarkKey"]:
        """``n`` decoy keys with the same parameters that never served anything."""
        master = hashlib.sha256(b"distillguard-decoys:" + str(seed).encode()).digest()
        return [
            WatermarkKey.derive(master, key_id=f"decoy-{seed}-{i}", **self.params())
            for i in range(n)
        ]

    def params(self) -> dict:
        d = asdict(self)
        for k in ("key_id", "secret", "created_at", "retired_at"):
            d.pop(k)
        return d

    def to_dict(self) -> dict:
        d = asdict(self)
        d["secret"] = self.secret.hex()
        return {"format": KEY_FORMAT, **d}

    @classmethod
    def from_dict(cls, d: dict) -> "WatermarkKey":
        d = dict(d)
        fmt = d.pop("format", KEY_FORMAT)
        if fmt != KEY_FORMAT:
            raise ConfigError(f"key format {fmt!r} not supported (expected {KEY_FORMAT})")
        try:
            d["secret"] = bytes.fromhex(d["secret"])
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"invalid watermark key: {exc}; regenerate it with `distillguard provenance keygen`") from exc

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        try:
            path.chmod(0o600)
        except OSError:  # pragma: no cover
            pass


def load_key(path: str | Path) -> WatermarkKey:
    """Read a key file (JSON) or the active key of a key ring (JSON Lines)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"key file {path} not found; create one with `distillguard provenance keygen --out {path}`")
    text = path.read_text()
    try:
        return WatermarkKey.from_dict(json.loads(text))
    except json.JSONDecodeError:
        return KeyRing.load(path).active


class KeyRing:
    """Keys in rotation: the newest non-retired key signs new responses; old keys still verify.

    Example:
        >>> ring = KeyRing([WatermarkKey.derive(b"m", key_id="a")])
        >>> new = ring.rotate(WatermarkKey.derive(b"m", key_id="b"))
        >>> ring.active.key_id, ring.get("a").retired_at is not None
        ('b', True)
    """

    def __init__(self, keys: list[WatermarkKey] | None = None):
        self.keys: list[WatermarkKey] = list(keys or [])

    @property
    def active(self) -> WatermarkKey:
        live = [k for k in self.keys if not k.retired_at]
        if not live:
            raise ConfigError("the key ring has no active key; add one with `distillguard provenance keygen --ring FILE`")
        return live[-1]

    def get(self, key_id: str) -> WatermarkKey:
        for k in self.keys:
            if k.key_id == key_id:
                return k
        raise ConfigError(f"key id {key_id!r} is not in the key ring")

    def rotate(self, new: WatermarkKey) -> WatermarkKey:
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        self.keys = [replace(k, retired_at=k.retired_at or now) for k in self.keys]
        self.keys.append(new)
        return new

    def save(self, path: str | Path) -> None:
        Path(path).write_text("".join(json.dumps(k.to_dict()) + "\n" for k in self.keys))

    @classmethod
    def load(cls, path: str | Path) -> "KeyRing":
        keys = []
        for i, line in enumerate(Path(path).read_text().splitlines(), 1):
            if line.strip():
                try:
                    keys.append(WatermarkKey.from_dict(json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{i}: not JSON ({exc})") from exc
        return cls(keys)
