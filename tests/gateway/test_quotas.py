"""Sliding-window quotas: the memory backend and the Redis Lua scripts give the same answers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from distillguard.gateway.state import MemoryState, RedisState


def _limits(key=(0, 0, 0, 0), account=(0, 0, 0, 0), cluster=(0, 0, 0, 0)) -> list[int]:
    return [*key, *account, *cluster]


@pytest.fixture(params=["memory", "redis"])
def state(request):
    if request.param == "memory":
        yield MemoryState()
        return
    url, _, _ = request.getfixturevalue("redis_server")
    yield RedisState(url=url, namespace="q" + uuid.uuid4().hex[:8])


def test_no_double_quota_across_a_window_boundary(state):
    lim = _limits(key=(5, 0, 0, 0))

    async def go():
        admit = lambda t: state.admit("k", "a", "", lim, now=t)  # noqa: E731
        late = [(await admit(59.0 + i * 0.1)).ok for i in range(5)]  # 5 just before the minute turns
        early = [await admit(60.5 + i * 0.1) for i in range(5)]  # fixed UTC windows would admit these 5
        at_120 = (await admit(119.9)).ok  # the oldest bucket (59 s) still overlaps the last 60 s
        at_121 = [(await admit(120.0 + i * 0.01)).ok for i in range(6)]
        await state.close()
        return late, early, at_120, at_121

    late, early, at_120, at_121 = asyncio.run(go())
    assert late == [True] * 5
    assert [a.ok for a in early] == [False] * 5
    assert early[0].scope == "key" and early[0].limit == "requests_per_minute"
    assert early[0].retry_after_s == 60  # until 120.0, when bucket 59 leaves the window
    assert at_120 is False
    assert at_121 == [True] * 5 + [False]


def test_any_sliding_minute_holds_at_most_n(state):
    """Requests every 0.7 s for 5 minutes against 20/min: no 60 s span ever holds more than 20."""
    lim = _limits(account=(20, 0, 0, 0))

    async def go():
        out = []
        for i in range(430):
            t = 1000.0 + i * 0.7
            if (await state.admit("k", "a", "", lim, now=t)).ok:
                out.append(t)
        await state.close()
        return out

    admitted = asyncio.run(go())
    worst = max(sum(1 for u in admitted if t - 60 < u <= t) for t in admitted)
    assert worst == 20
    assert len(admitted) >= 20 * 5 - 5  # and the allowance is given back as the window slides


def test_day_quota_and_tokens_slide(state):
    lim = _limits(account=(0, 3, 0, 25))

    async def go():
        day = 86400.0
        a = [(await state.admit("k", "a", "", lim, now=day * 10 + 3600 * h)).ok for h in range(4)]
        b = (await state.admit("k", "a", "", lim, now=day * 11 + 30)).ok  # 24 h after the first: back
        await state.add_tokens("k", "a", (), 30, now=day * 11 + 40)
        c = await state.admit("k", "a", "", lim, now=day * 11 + 60)  # tokens over quota now
        await state.close()
        return a, b, c

    a, b, c = asyncio.run(go())
    assert a == [True, True, True, False]
    assert b is False  # the conservative bucket (15 min) still holds the first request
    assert not c.ok and c.limit in ("requests_per_day", "tokens_per_day")


def test_cluster_quota_shared_by_linked_accounts(state):
    lim = _limits(cluster=(4, 0, 0, 0))

    async def go():
        out = [(await state.admit(f"k{i % 3}", f"a{i % 3}", "pay-1", lim, now=500.0 + i)).ok for i in range(6)]
        other = (await state.admit("kx", "ax", "pay-2", lim, now=505.0)).ok
        await state.close()
        return out, other

    out, other = asyncio.run(go())
    assert out == [True] * 4 + [False] * 2 and other is True
