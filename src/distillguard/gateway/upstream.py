"""The gateway's upstream client: raw HTTP/1.1 over pooled keep-alive connections (asyncio
protocols + ``httptools``' C parser), a few microseconds of Python per request.

General-purpose clients (httpx, aiohttp) cost 0.2 to 1 ms of CPU per request in this proxy; this
one does only what the gateway needs: one request per connection at a time (no pipelining), the
response body whole or chunk by chunk (server-sent events), a connect timeout, a read timeout
between bytes, and no retries (a retried POST could bill twice). ``https://`` upstreams use TLS
with the system's certificates.

Example:

>>> import asyncio
>>> from distillguard.gateway.fakeupstream import FakeUpstream
>>> up = FakeUpstream().start()
>>> async def call():
...     pool = UpstreamPool(up.url)
...     r = await pool.request("POST", "/v1/chat/completions", b'{"model": "m", "messages": []}')
...     await pool.close()
...     return r.status, r.body[:1]
>>> asyncio.run(call())
(200, b'{')
>>> up.stop()
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from typing import AsyncIterator
from urllib.parse import SplitResult, urlsplit

import httptools

from distillguard.errors import ConfigError

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse", "UpstreamTimeout"]

_KEEP_HEADERS = frozenset((b"content-type", b"retry-after", b"content-encoding", b"x-request-id"))
_HIGH_WATER = 256 << 10  # streamed bytes buffered before the upstream socket is paused


class UpstreamError(ConnectionError):
    """The upstream could not be reached, or broke off the response."""


class UpstreamTimeout(UpstreamError):
    """No byte from the upstream within the read (or connect) timeout."""


class UpstreamResponse:
    """Status, the few headers the gateway uses (lower-case ``str``), and the body: ``body`` when
    read whole, else :meth:`chunks`. Call :meth:`release` (connection reused) or :meth:`close`."""

    __slots__ = ("status", "headers", "body", "_conn")

    def __init__(self, status: int, headers: dict[str, str], body: bytes, conn: "_Conn | None"):
        self.status, self.headers, self.body, self._conn = status, headers, body, conn

    async def chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        assert conn is not None, "chunks() is for streamed responses"
        while True:
            if conn.parts:
                data = b"".join(conn.parts)
                conn.parts.clear()
                conn.buffered = 0
                if conn.paused and conn.transport is not None:
                    conn.paused = False
                    conn.transport.resume_reading()
                if conn.decomp is not None:
                    data = conn.decomp.decompress(data)
                if data:
                    yield data
                continue
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                if conn.decomp is not None:
                    tail = conn.decomp.flush()
                    conn.decomp = None
                    if tail:
                        yield tail
                return
            conn.waiter = asyncio.get_running_loop().create_future()
            await conn.waiter

    def release(self) -> None:
        """Give the connection back to the pool (if the response was read to its end), else close it."""
        if self._conn is not None:
            self._conn.finish()
            self._conn = None

    def close(self) -> None:
        """Drop the connection (a streamed generation upstream stops when its connection goes)."""
        if self._conn is not None:
            self._conn.abort()
            self._conn = None


class _Conn(asyncio.Protocol):
    def __init__(self, pool: "UpstreamPool"):
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.busy = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.parts: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.keep_alive = True
        self.stream = False
        self.error: Exception | None = None
        self.head: asyncio.Future | None = None  # resolved at headers (stream) or message end (whole)
        self.waiter: asyncio.Future | None = None
        self.decomp = None
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for (a broken upstream): never parse them into the next answer
            self.abort()
            return
        self.last = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._fail(UpstreamError(f"the upstream sent a malformed HTTP response ({e})"))
            self.abort()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self.pool._forget(self)
        if self.busy and not self.complete:
            self._fail(UpstreamError("the upstream closed the connection before the response was complete"))

    def pause_writing(self) -> None:  # requests are small; nothing to do
        return None

    def resume_writing(self) -> None:
        return None

    # httptools callbacks -----------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _KEEP_HEADERS:
            self.headers[name.decode()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        enc = self.headers.get("content-encoding", "").lower()
        if enc in ("gzip", "deflate", "x-gzip"):
            self.decomp = zlib.decompressobj(47)  # gzip or zlib, auto-detected
        if self.stream and self.status == 200 and self.head is not None and not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)
        if self.stream and self.status == 200:
            self.buffered += len(body)
            if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            w = self.waiter
            if w is not None and not w.done():
                w.set_result(None)

    def on_message_complete(self) -> None:
        self.complete = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.head is not None and not self.head.done():
            self.head.set_result(None)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    # request lifecycle -------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for f in (self.head, self.waiter):
            if f is not None and not f.done():
                f.set_exception(exc)
                f.exception()  # retrieved here: a stream's consumer may never await it

    def _check_timeout(self) -> None:
        self.timer = None
        if self.complete or self.error is not None:
            return
        if self.paused:  # the client reads slowly: not the upstream's fault
            self.last = self.loop.time()
        idle = self.loop.time() - self.last
        if idle >= self.pool.read_timeout:
            self._fail(UpstreamTimeout(f"no byte from the upstream for {self.pool.read_timeout:g} s"))
            self.abort()
        else:
            self.timer = self.loop.call_at(self.last + self.pool.read_timeout, self._check_timeout)

    def start(self, raw: bytes, stream: bool) -> asyncio.Future:
        self._reset()
        self.busy = True
        self.stream = stream
        self.head = self.loop.create_future()
        self.last = self.loop.time()
        self.timer = self.loop.call_at(self.last + self.pool.read_timeout, self._check_timeout)
        assert self.transport is not None
        self.transport.write(raw)
        return self.head

    def finish(self) -> None:
        """The response is done with: back to the pool when reusable, else closed."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.busy = False
        if self.complete and self.keep_alive and self.error is None and not self.closed and self.transport is not None \
                and not self.transport.is_closing():
            if self.paused:
                self.transport.resume_reading()
            self.head = self.waiter = None
            self.parts = []
            self.pool._put_back(self)
        else:
            self.abort()

    def abort(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.busy = False
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        if not self.closed:
            self.closed = True
            self.pool._forget(self)


def check_upstream_url(base_url: str) -> SplitResult:
    """``base_url`` split, or :class:`ConfigError` when it is not ``http(s)://host[:port][/path]``."""
    u = urlsplit(base_url)
    try:
        port_ok = u.port is None or 0 < u.port
    except ValueError:  # not a number, or out of range
        port_ok = False
    if u.scheme not in ("http", "https") or not u.hostname or not port_ok:
        raise ConfigError(f"upstream URL must be http(s)://host[:port], not {base_url!r}")
    return u


class UpstreamPool:
    """Keep-alive connections to one upstream base URL (``http://`` or ``https://``)."""

    def __init__(self, base_url: str, *, max_connections: int = 512, connect_timeout_s: float = 5.0,
                 read_timeout_s: float = 120.0, idle_timeout_s: float = 4.0, ssl_context: ssl.SSLContext | None = None):
        """``idle_timeout_s``: a pooled connection idle longer than this is closed rather than reused; it
        stays under the 5 s keep-alive of uvicorn-based servers (vLLM, ...) so that a request is never
        written into a connection the upstream is closing at that moment (which would fail it: a POST
        is not retried)."""
        u = check_upstream_url(base_url)
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.base_path = u.path.rstrip("/")
        self.ssl = (ssl_context or ssl.create_default_context()) if u.scheme == "https" else None
        default_port = (u.scheme == "https" and self.port == 443) or (u.scheme == "http" and self.port == 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode("idna")
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout_s
        self.read_timeout = read_timeout_s
        self.idle_timeout = idle_timeout_s
        self.loop = asyncio.get_running_loop()
        self._idle: deque[_Conn] = deque()
        self._all: set[_Conn] = set()
        self._opening = 0
        self._waiters: deque[asyncio.Future] = deque()

    # pool --------------------------------------------------------------------------------------
    def _forget(self, conn: _Conn) -> None:
        self._all.discard(conn)
        try:
            self._idle.remove(conn)
        except ValueError:
            pass
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _put_back(self, conn: _Conn) -> None:
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._wake_one()

    async def _acquire(self) -> _Conn:
        while True:
            while self._idle:
                conn = self._idle.pop()  # most recently used first: its socket is warm
                if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                    if self.loop.time() - conn.idle_since < self.idle_timeout:
                        return conn
                    conn.abort()  # idle so long that the upstream may be closing it right now
                    continue
                self._all.discard(conn)
            if len(self._all) + self._opening < self.max_connections:
                break
            w = self.loop.create_future()
            self._waiters.append(w)
            await w
        self._opening += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(lambda: _Conn(self), self.host, self.port, ssl=self.ssl,
                                            server_hostname=self.host if self.ssl else None),
                self.connect_timeout)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"connecting to the upstream took over {self.connect_timeout:g} s") from None
        except OSError as e:
            raise UpstreamError(f"cannot connect to the upstream ({e.strerror or e})") from None
        finally:
            self._opening -= 1
            self._wake_one()
        self._all.add(conn)
        return conn

    # requests ----------------------------------------------------------------------------------
    def build(self, method: str, path: str, body: bytes | None, headers: bytes = b"") -> bytes:
        """The request's bytes; ``headers`` are complete ``Name: value\\r\\n`` lines."""
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s" % (method.encode(), (self.base_path + path).encode(),
                                                     self.host_header, headers)
        if body is None:
            return head + b"\r\n"
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def request(self, method: str, path: str, body: bytes | None, headers: bytes = b"", *,
                      stream: bool = False) -> UpstreamResponse:
        """Send one request. Whole responses come back read and their connection released; a streamed
        200 comes back after its headers, to be read with ``chunks()`` and then released or closed."""
        conn = await self._acquire()
        fut = conn.start(self.build(method, path, body, headers), stream)
        try:
            await fut
        except asyncio.CancelledError:
            conn.abort()
            raise
        except UpstreamError:
            conn.abort()
            raise
        if stream and conn.status == 200:
            return UpstreamResponse(200, conn.headers, b"", conn)
        data = b"".join(conn.parts) if len(conn.parts) != 1 else conn.parts[0]
        if conn.decomp is not None:
            try:
                data = conn.decomp.decompress(data) + conn.decomp.flush()
            except zlib.error:
                pass
            conn.headers.pop("content-encoding", None)
        resp = UpstreamResponse(conn.status, conn.headers, data, None)
        conn.finish()
        return resp

    async def close(self) -> None:
        for conn in list(self._all):
            conn.abort()
        self._idle.clear()
        self._all.clear()
