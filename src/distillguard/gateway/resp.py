"""A pipelined Redis (RESP2) client for the gateway's per-request scripts.

Every concurrent request's command is written at once on one connection and the replies are matched
in order, so any number of requests in flight share one socket (redis-py's pool refuses the 101st
concurrent command by default, which the gateway would have had to treat as "Redis unreachable")
and a command costs a few microseconds of Python instead of redis-py's ~0.2 ms. Scripts are sent
with ``EVALSHA`` and loaded on ``NOSCRIPT``. A call that gets no reply within ``timeout_s``, a lost
connection or a refused one raise :class:`RedisUnavailable`; the next call reconnects.

Example:

>>> c = RespClient.from_url("redis://:secret@127.0.0.1:6390/2")
>>> (c.host, c.port, c.db, c.password)
('127.0.0.1', 6390, 2, 'secret')
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RedisReplyError", "RedisUnavailable", "RespClient"]


class RedisUnavailable(ConnectionError):
    """No connection to Redis, or no reply in time."""


class RedisReplyError(Exception):
    """Redis answered with an error reply (``-ERR ...``)."""


def _encode(args: tuple) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    add = out.append
    for a in args:
        t = type(a)
        if t is str:
            b = a.encode()
        elif t is int:
            b = b"%d" % a
        elif t is bytes:
            b = a
        elif t is float:
            b = repr(a).encode()
        else:
            b = str(a).encode()
        add(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buf: bytes, i: int) -> tuple[Any, int]:
    """One reply from ``buf`` at ``i``: (value, next index); raises _Incomplete when more bytes are needed."""
    j = buf.find(b"\r\n", i)
    if j < 0:
        raise _Incomplete
    t, line = buf[i : i + 1], buf[i + 1 : j]
    if t == b"$":
        n = int(line)
        if n < 0:
            return None, j + 2
        end = j + 2 + n
        if len(buf) < end + 2:
            raise _Incomplete
        return buf[j + 2 : end], end + 2
    if t == b"*":
        n = int(line)
        if n < 0:
            return None, j + 2
        items, k = [], j + 2
        for _ in range(n):
            v, k = _parse(buf, k)
            items.append(v)
        return items, k
    if t == b":":
        return int(line), j + 2
    if t == b"+":
        return line, j + 2
    if t == b"-":
        return RedisReplyError(line.decode("utf-8", "replace")), j + 2
    raise RedisUnavailable(f"unexpected bytes from Redis ({t!r})")


class _Proto(asyncio.Protocol):
    def __init__(self, client: "RespClient"):
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.pending: deque[asyncio.Future] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        i, n = 0, len(buf)
        pending = self.pending
        try:
            while i < n:
                v, i = _parse(buf, i)
                if pending:
                    f = pending.popleft()
                    if not f.done():
                        f.set_result(v)
        except _Incomplete:
            pass
        except (RedisUnavailable, ValueError) as e:
            self.fail(RedisUnavailable(str(e)))
            return
        self.buf = buf[i:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisUnavailable("the connection to Redis was lost"))

    def fail(self, exc: Exception) -> None:
        if self.client._proto is self:
            self.client._proto = None
        while self.pending:
            f = self.pending.popleft()
            if not f.done():
                f.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


class RespClient:
    """One pipelined connection to ``redis://`` / ``rediss://[user:password@]host[:port][/db]``."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, db: int = 0, username: str | None = None,
                 password: str | None = None, use_ssl: bool = False, timeout_s: float = 0.5):
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.ssl = ssl.create_default_context() if use_ssl else None
        self.timeout_s = timeout_s
        self._proto: _Proto | None = None
        self._connecting: asyncio.Future | None = None
        self._sha: dict[str, str] = {}

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.5) -> "RespClient":
        u = urlsplit(url)
        if u.scheme not in ("redis", "rediss"):
            raise ValueError(f"only redis:// and rediss:// URLs are supported here, not {url!r}")
        db = int(u.path.strip("/") or 0) if u.path.strip("/").isdigit() or not u.path.strip("/") else 0
        return cls(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=db,
                   username=unquote(u.username) if u.username else None,
                   password=unquote(u.password) if u.password else None, use_ssl=u.scheme == "rediss",
                   timeout_s=timeout_s)

    async def _connect(self) -> _Proto:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: _Proto(self), self.host, self.port, ssl=self.ssl,
                                       server_hostname=self.host if self.ssl else None), self.timeout_s)
        except (OSError, asyncio.TimeoutError) as e:
            raise RedisUnavailable(f"cannot connect to Redis at {self.host}:{self.port} ({type(e).__name__})") from None
        hello = []
        if self.password:
            hello.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            hello.append(("SELECT", self.db))
        for cmd in hello:
            r = await self._send(proto, cmd)
            if isinstance(r, RedisReplyError):
                proto.fail(RedisUnavailable(f"Redis refused {cmd[0]}: {r}"))
                raise RedisUnavailable(f"Redis refused {cmd[0]}: {r}")
        self._proto = proto  # only now: no command may run before AUTH and SELECT are done
        return proto

    async def _get(self) -> _Proto:
        proto = self._proto
        if proto is not None and proto.transport is not None:
            return proto
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        fut = self._connecting
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done() and self._connecting is fut:
                self._connecting = None

    async def _send(self, proto: _Proto, args: tuple) -> Any:
        loop = asyncio.get_running_loop()
        f = loop.create_future()
        proto.pending.append(f)
        assert proto.transport is not None
        proto.transport.write(_encode(args))
        timer = loop.call_later(self.timeout_s, _expire, proto, f, self.timeout_s)
        try:
            return await f
        finally:
            timer.cancel()

    async def call(self, *args: Any) -> Any:
        """One command; returns the reply (an error reply raises :class:`RedisReplyError`)."""
        r = await self._send(await self._get(), args)
        if isinstance(r, RedisReplyError):
            raise r
        return r

    async def script(self, source: str, keys: list[str], args: list[Any]) -> Any:
        """``EVALSHA`` the script (loading it on ``NOSCRIPT``)."""
        sha = self._sha.get(source)
        if sha is None:
            sha = self._sha[source] = hashlib.sha1(source.encode()).hexdigest()
        proto = await self._get()
        r = await self._send(proto, ("EVALSHA", sha, len(keys), *keys, *args))
        if isinstance(r, RedisReplyError) and str(r).startswith("NOSCRIPT"):
            r = await self._send(proto, ("EVAL", source, len(keys), *keys, *args))
        if isinstance(r, RedisReplyError):
            raise r
        return r

    async def close(self) -> None:
        if self._proto is not None:
            self._proto.fail(RedisUnavailable("closed"))
            self._proto = None


def _expire(proto: _Proto, f: asyncio.Future, timeout_s: float) -> None:
    """A reply overdue: the connection is in an unknown state, drop it (every pending call fails)."""
    if not f.done():
        proto.fail(RedisUnavailable(f"no reply from Redis within {timeout_s:g} s"))
