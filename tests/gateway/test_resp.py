"""The pipelined Redis client behind ``--redis``: concurrency, scripts, auth, failures."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from distillguard.errors import StateBackendError
from distillguard.gateway.resp import RedisReplyError, RedisUnavailable, RespClient, _Proto
from distillguard.gateway.state import RedisState


def run(coro):
    return asyncio.run(coro)


def test_many_concurrent_admissions_share_one_connection(redis_server):
    """500 requests in flight at once against a quota of 400: exactly 400 admitted, none refused for
    'Redis unreachable' (a capped connection pool refused the 101st, and fail-open then admitted it
    without any quota)."""
    url, _, _ = redis_server
    st = RedisState(url=url, namespace="r" + uuid.uuid4().hex[:8])
    lim = [0, 400, 0, 0] + [0] * 8

    async def go():
        res = await asyncio.gather(*[st.admit("k", "a", "", lim, now=1000.0 + i * 0.001) for i in range(500)],
                                   return_exceptions=True)
        await st.close()
        return res

    res = run(go())
    assert not [r for r in res if isinstance(r, Exception)]
    assert sum(r.ok for r in res) == 400


def test_script_reloaded_after_flush_and_auth_select(redis_server):
    url, port, _ = redis_server
    import redis as redis_lib

    r = redis_lib.Redis(port=port)
    r.config_set("requirepass", "s3cret")

    async def go():
        bad = RedisState(url=f"redis://127.0.0.1:{port}/3", namespace="x")
        with pytest.raises(StateBackendError, match="AUTH|NOAUTH|unreachable"):
            await bad.admit("k", "a", "", [1] + [0] * 11, now=10.0)
        await bad.close()
        st = RedisState(url=f"redis://:s3cret@127.0.0.1:{port}/3", namespace="x")
        lim = [2] + [0] * 11
        a = (await st.admit("k", "a", "", lim, now=10.0)).ok
        await st._c.call("SCRIPT", "FLUSH")
        b = (await st.admit("k", "a", "", lim, now=10.1)).ok  # NOSCRIPT: sent again with EVAL
        c = (await st.admit("k", "a", "", lim, now=10.2)).ok
        dbsize = await st._c.call("DBSIZE")
        await st._c.call("SELECT", 0)
        db0 = await st._c.call("DBSIZE")
        await st.close()
        return a, b, c, dbsize, db0

    a, b, c, dbsize, db0 = run(go())
    assert (a, b, c) == (True, True, False)
    assert dbsize >= 1 and db0 == 0  # the counters went to db 3


def test_no_reply_times_out_and_reconnects():
    async def go():
        async def silent(reader, writer):
            await reader.read(1 << 16)
            await asyncio.sleep(5)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            c = RespClient(port=port, timeout_s=0.2)
            with pytest.raises(RedisUnavailable, match="no reply"):
                await c.call("PING")
            assert c._proto is None  # dropped: the next call opens a new connection
            with pytest.raises(RedisUnavailable):
                await c.call("PING")
            await c.close()
        refused = RespClient(port=port, timeout_s=0.2)
        with pytest.raises(RedisUnavailable, match="cannot connect"):
            await refused.call("PING")

    run(go())


def test_replies_split_anywhere_are_parsed():
    class T:
        def write(self, b):
            pass

        def abort(self):
            pass

    async def go():
        loop = asyncio.get_running_loop()
        p = _Proto(RespClient())
        p.transport = T()
        futs = [loop.create_future() for _ in range(5)]
        p.pending.extend(futs)
        data = b"+OK\r\n:42\r\n$5\r\nhello\r\n*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:7\r\n-ERR bad thing\r\n"
        for i in range(len(data)):
            p.data_received(data[i : i + 1])
        return [f.result() for f in futs]

    ok, n, s, arr, err = run(go())
    assert (ok, n, s, arr) == (b"OK", 42, b"hello", [b"a", None, [7]])
    assert isinstance(err, RedisReplyError) and "bad thing" in str(err)


def test_bad_url_is_a_config_error():
    from distillguard.errors import ConfigError

    with pytest.raises(ConfigError, match="redis://"):
        RedisState(url="unix:///tmp/redis.sock")


def test_error_reply_is_a_state_error(redis_server):
    """An error reply (here: a read-only replica) is handled like an unreachable Redis (fail mode applies)."""
    url, port, _ = redis_server
    import redis as redis_lib

    redis_lib.Redis(port=port).config_set("min-replicas-to-write", 1)  # refuses writes: NOREPLICAS

    async def go():
        st = RedisState(url=url, namespace="e" + uuid.uuid4().hex[:8])
        with pytest.raises(StateBackendError, match="answered an error"):
            await st.admit("k", "a", "", [1] + [0] * 11, now=1.0)
        await st.close()

    run(go())
