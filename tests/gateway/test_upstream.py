"""The raw pooled upstream client: reuse, limits, compression, broken and closing upstreams."""

from __future__ import annotations

import asyncio
import gzip

import orjson
import pytest

from distillguard.errors import ConfigError

from distillguard.gateway.upstream import UpstreamError, UpstreamPool, UpstreamTimeout

CHAT = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})


def run(coro):
    return asyncio.run(coro)


async def _raw_server(handler):
    """A one-off TCP server: ``handler(reader, writer)`` per connection; returns (server, base URL)."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def _read_request(reader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    return head + (await reader.readexactly(n) if n else b"")


def test_keep_alive_reuse_and_connection_limit(upstream):
    async def go():
        pool = UpstreamPool(upstream.url, max_connections=2)
        seq = [await pool.request("POST", "/v1/chat/completions", CHAT) for _ in range(5)]
        after_seq = len(pool._all)
        slow = orjson.dumps({"model": "slow-50", "messages": []})
        conc = await asyncio.gather(*[pool.request("POST", "/v1/chat/completions", slow) for _ in range(6)])
        most = len(pool._all)
        await pool.close()
        return seq, after_seq, conc, most

    seq, after_seq, conc, most = run(go())
    assert [r.status for r in seq] == [200] * 5 and after_seq == 1  # one connection, reused
    assert [r.status for r in conc] == [200] * 6 and most <= 2  # six requests queued on two connections
    assert orjson.loads(conc[0].body)["object"] == "chat.completion"


def test_stream_chunks_and_headers(upstream):
    async def go():
        pool = UpstreamPool(upstream.url)
        body = orjson.dumps({"model": "m", "messages": [], "stream": True, "fake_chunks": 3})
        r = await pool.request("POST", "/v1/chat/completions", body, stream=True)
        data = b"".join([c async for c in r.chunks()])
        r.release()
        again = await pool.request("POST", "/v1/chat/completions", CHAT)  # the connection was reusable
        n = len(pool._all)
        await pool.close()
        return r, data, again, n

    r, data, again, n = run(go())
    assert r.status == 200 and r.headers["content-type"] == "text/event-stream"
    assert data.count(b"data: ") == 5 and data.endswith(b"data: [DONE]\n\n")
    assert again.status == 200 and n == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_gzip_response_is_decompressed(chunked):
    payload = orjson.dumps({"object": "chat.completion", "choices": []})

    async def handler(reader, writer):
        await _read_request(reader)
        z = gzip.compress(payload)
        if chunked:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                         b"transfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                         % (10, z[:10], len(z) - 10, z[10:]))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                         b"content-length: %d\r\n\r\n%s" % (len(z), z))
        await writer.drain()

    async def go():
        server, url = await _raw_server(handler)
        async with server:
            pool = UpstreamPool(url)
            r = await pool.request("POST", "/v1/chat/completions", CHAT)
            await pool.close()
            return r

    r = run(go())
    assert r.status == 200 and r.body == payload and "content-encoding" not in r.headers


def test_upstream_closing_connections_and_no_retry():
    seen = []

    async def handler(reader, writer):
        req = await _read_request(reader)
        seen.append(req)
        if b'"drop"' in req:
            writer.close()  # no answer at all
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    async def go():
        server, url = await _raw_server(handler)
        async with server:
            pool = UpstreamPool(url)
            a = await pool.request("POST", "/x", b"{}")
            b = await pool.request("POST", "/x", b"{}")  # the first connection was closed: a new one
            with pytest.raises(UpstreamError, match="closed the connection"):
                await pool.request("POST", "/x", b'{"model": "drop"}')
            await pool.close()
            return a, b

    a, b = run(go())
    assert a.status == b.status == 200 and a.body == b"{}"
    assert len(seen) == 3  # the dropped request was sent once, never retried


def test_malformed_response_and_read_timeout():
    async def handler(reader, writer):
        req = await _read_request(reader)
        if b"slow" in req:
            await asyncio.sleep(1)
        else:
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            await writer.drain()

    async def go():
        server, url = await _raw_server(handler)
        async with server:
            pool = UpstreamPool(url, read_timeout_s=0.2)
            with pytest.raises(UpstreamError, match="malformed"):
                await pool.request("POST", "/x", b"{}")
            with pytest.raises(UpstreamTimeout):
                await pool.request("POST", "/x", b'"slow"')
            await pool.close()

    run(go())


def test_unreachable_and_bad_url():
    async def go():
        pool = UpstreamPool("http://127.0.0.1:9")
        with pytest.raises(UpstreamError, match="cannot connect"):
            await pool.request("GET", "/v1/models", None)
        with pytest.raises(ConfigError, match="http"):
            UpstreamPool("ftp://x")

    run(go())


def test_base_path_and_host_header():
    got = {}

    async def handler(reader, writer):
        got["req"] = await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()

    async def go():
        server, url = await _raw_server(handler)
        async with server:
            pool = UpstreamPool(url + "/prefix/", read_timeout_s=5)
            await pool.request("GET", "/v1/models", None, b"Accept: */*\r\n")
            await pool.close()
            return url

    url = run(go())
    head = got["req"].split(b"\r\n")
    assert head[0] == b"GET /prefix/v1/models HTTP/1.1"
    assert b"Host: " + url.split("//")[1].encode() in head and b"Accept: */*" in head


def test_idle_connections_are_not_reused_past_the_idle_timeout(upstream):
    async def go():
        pool = UpstreamPool(upstream.url, idle_timeout_s=0.05)
        await pool.request("POST", "/v1/chat/completions", CHAT)
        first = next(iter(pool._all))
        await pool.request("POST", "/v1/chat/completions", CHAT)
        reused = next(iter(pool._all)) is first
        await asyncio.sleep(0.1)
        r = await pool.request("POST", "/v1/chat/completions", CHAT)
        fresh = next(iter(pool._all)) is not first and first.closed
        await pool.close()
        return reused, fresh, r.status

    assert run(go()) == (True, True, 200)


def test_unsolicited_bytes_on_an_idle_connection_drop_it():
    async def handler(reader, writer):
        while True:
            try:
                await _read_request(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsmuggle")  # nobody asked for this
            await writer.drain()

    async def go():
        server, url = await _raw_server(handler)
        async with server:
            pool = UpstreamPool(url)
            a = await pool.request("POST", "/x", b"{}")
            first = next(iter(pool._all))
            await asyncio.sleep(0.1)
            b = await pool.request("POST", "/x", b"{}")
            await pool.close()
            return a.body, b.body, first.closed

    assert run(go()) == (b"{}", b"{}", True)
