"""Gateway state: quotas and flags, in memory (one process) or in Redis (shared by many).

Both backends give the same answers. Quotas are sliding windows: a quota of N per minute (per day)
admits at most N in *any* 60 s (24 h) span, not per calendar minute, so nobody gets 2N by sending N
just before and N just after a window boundary. Each counter keeps buckets (1 s for minute quotas,
15 min for day quotas) and a running total; a request is admitted when the buckets overlapping the
last period hold fewer than N (the oldest, partly covered bucket counts whole: conservative by at
most one bucket). Request counters are checked and incremented atomically (one Lua script in Redis),
so a quota of N admits exactly N requests across any number of gateway processes. Token counters
are checked before a request and incremented after it (token usage is only known then).

All Redis keys share one hash tag, ``dg:{<namespace>}:...``: every script touches a single slot, so
the scripts are valid on Redis Cluster (the gateway's counters then live on one shard; a few
operations per request fit one shard easily).

Example:

>>> import asyncio
>>> st = MemoryState()
>>> lim = [2, 0, 0, 0] + [0] * 8           # key: 2 requests per minute
>>> [asyncio.run(st.admit("k1", "acme", "", lim, now=60.0)).ok for _ in range(3)]
[True, True, False]
>>> asyncio.run(st.admit("k1", "acme", "", lim, now=119.5)).retry_after_s   # fixed windows would admit
2
>>> asyncio.run(st.admit("k1", "acme", "", lim, now=121.0)).ok
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from distillguard.errors import StateBackendError

__all__ = ["Admission", "MemoryState", "RedisState", "make_state"]

# (quota, period s, bucket width s): the window of a check at time t is the K + 1 buckets b - K .. b,
# b = floor(t / width), K = period / width
_WINDOWS = (("requests_per_minute", 60, 1), ("requests_per_day", 86400, 900), ("tokens_per_minute", 60, 1),
            ("tokens_per_day", 86400, 900))
_SCOPE_NAMES = {"k": "key", "a": "account", "c": "cluster"}


@dataclass(frozen=True)
class Admission:
    ok: bool
    scope: str = ""  # key | account | cluster when refused
    limit: str = ""  # which quota
    retry_after_s: int = 0
    cluster_id: str | None = None
    account_flag: dict | None = None
    cluster_flag: dict | None = None
    clusters: tuple[str, ...] = ()  # every cluster the request was counted against


def _merge_flags(*flags: dict | None) -> dict | None:
    present = [f for f in flags if f]
    if not present:
        return None
    return max(present, key=lambda f: (bool(f.get("flagged")), float(f.get("score", 0.0))))


class _Sliding:
    """One sliding-window counter: buckets, the lowest bucket that may still hold counts, the total."""

    __slots__ = ("buckets", "lo", "total")

    def __init__(self, b: int) -> None:
        self.buckets: dict[int, int] = {}
        self.lo = b
        self.total = 0

    def live(self, b: int, k: int) -> int:
        """The count in buckets ``b - k .. b`` (older buckets are dropped first)."""
        cut = b - k
        if self.lo < cut:
            if cut - self.lo > k:
                self.buckets.clear()
                self.total = 0
            else:
                for i in range(self.lo, cut):
                    self.total -= self.buckets.pop(i, 0)
            self.lo = cut
        return self.total

    def add(self, b: int, n: int) -> None:
        self.buckets[b] = self.buckets.get(b, 0) + n
        self.total += n

    def retry_after(self, b: int, k: int, lim: int, now: float, width: int) -> int:
        """Seconds until enough of the oldest buckets have left the window to admit one more."""
        n = self.total
        for m in range(1, k + 2):
            n -= self.buckets.get(b - k + m - 1, 0)
            if n < lim:
                return max(1, math.ceil((b + m) * width - now))
        return max(1, math.ceil((b + k + 1) * width - now))


class MemoryState:
    """Quotas and flags of one process (the default)."""

    backend = "memory"

    def __init__(self) -> None:
        self._counters: dict[str, _Sliding] = {}  # "<quota>:<scope>:<id>" -> counter
        self.flags: dict[str, dict] = {}  # "a:<account>" / "c:<cluster>" -> flag
        self.account_cluster: dict[str, str] = {}

    def _counter(self, name: str, b: int) -> _Sliding:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = _Sliding(b)
        return c

    async def admit(self, key_id: str, account_id: str, cluster_hint: str, limits: list[int], *, now: float) -> Admission:
        det = self.account_cluster.get(account_id, "")
        clusters = tuple(c for c in dict.fromkeys((cluster_hint, det)) if c)
        scopes = [("k", key_id), ("a", account_id)] + [("c", c) for c in clusters]
        cid = det or cluster_hint or None
        fa = self.flags.get("a:" + account_id)
        fc = _merge_flags(*(self.flags.get("c:" + c) for c in clusters))
        for i, (s, ident) in enumerate(scopes):
            block = min(i, 2)
            for j, (lname, period, width) in enumerate(_WINDOWS):
                lim = limits[4 * block + j]
                if lim > 0:
                    b, k = int(now // width), period // width
                    c = self._counters.get(f"{lname}:{s}:{ident}")
                    if c is not None and c.live(b, k) >= lim:
                        return Admission(False, _SCOPE_NAMES[s], lname, c.retry_after(b, k, lim, now, width), cid, fa,
                                         fc, clusters)
        for i, (s, ident) in enumerate(scopes):
            block = min(i, 2)
            for j, (lname, period, width) in enumerate(_WINDOWS[:2]):
                if limits[4 * block + j] > 0:  # only quotas in force are counted
                    b = int(now // width)
                    c = self._counter(f"{lname}:{s}:{ident}", b)
                    c.live(b, period // width)
                    c.add(b, 1)
        return Admission(True, cluster_id=cid, account_flag=fa, cluster_flag=fc, clusters=clusters)

    async def add_tokens(self, key_id: str, account_id: str, clusters: tuple[str, ...], tokens: int, *,
                         now: float) -> None:
        if tokens <= 0:
            return
        for s, ident in [("k", key_id), ("a", account_id)] + [("c", c) for c in clusters]:
            for lname, period, width in _WINDOWS[2:]:
                b = int(now // width)
                c = self._counter(f"{lname}:{s}:{ident}", b)
                c.live(b, period // width)
                c.add(b, tokens)

    async def set_flag(self, kind: str, ident: str, flag: dict | None) -> None:
        name = f"{kind}:{ident}"
        if flag is None:
            self.flags.pop(name, None)
        else:
            self.flags[name] = flag

    async def set_account_cluster(self, account_id: str, cluster_id: str) -> None:
        self.account_cluster[account_id] = cluster_id

    async def all_flags(self) -> dict[str, dict]:
        return dict(self.flags)

    async def publish_key(self, key_hash: str, account_id: str, api_key_id: str) -> None:
        return None  # one process: nothing to share

    async def publish_revoke(self, api_key_id: str) -> None:
        return None

    async def key_events(self) -> tuple[dict[str, dict], set[str]]:
        return {}, set()

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None


# sliding-window counters (see the module docstring): one hash per counter, fields = bucket index,
# plus 'lo' (lowest bucket that may hold counts) and 'n' (running total of the live buckets)
_SLIDING_LUA = """
local function live(k, b, K)
  local v = redis.call('HMGET', k, 'lo', 'n')
  if not v[1] then return 0 end
  local lo, n = tonumber(v[1]), tonumber(v[2] or '0')
  local cut = b - K
  if lo < cut then
    if cut - lo > K then
      redis.call('DEL', k)
      return 0
    end
    for i = lo, cut - 1 do
      local c = redis.call('HGET', k, i)
      if c then
        n = n - tonumber(c)
        redis.call('HDEL', k, i)
      end
    end
    redis.call('HSET', k, 'lo', cut, 'n', n)
  end
  return n
end
local function add(k, b, K, x, ttl)
  live(k, b, K)
  redis.call('HSETNX', k, 'lo', b)
  redis.call('HINCRBY', k, b, x)
  redis.call('HINCRBY', k, 'n', x)
  redis.call('EXPIRE', k, ttl)
end
local function retry_after(k, b, K, lim, now, w)
  local n = tonumber(redis.call('HGET', k, 'n') or '0')
  for m = 1, K + 1 do
    n = n - tonumber(redis.call('HGET', k, b - K + m - 1) or '0')
    if n < lim then return math.max(1, math.ceil((b + m) * w - now)) end
  end
  return math.max(1, math.ceil((b + K + 1) * w - now))
end
local names = {'requests_per_minute', 'requests_per_day', 'tokens_per_minute', 'tokens_per_day'}
local periods = {60, 86400, 60, 86400}
local widths = {1, 900, 1, 900}
"""

_ADMIT_LUA = _SLIDING_LUA + """
local flags = KEYS[1]
local pre = ARGV[1]
local now = tonumber(ARGV[2])
local kid, aid, hint = ARGV[3], ARGV[4], ARGV[5]
local det = redis.call('HGET', flags, 'ac:' .. aid) or ''
local scopes = {{'k', kid}, {'a', aid}}
if hint ~= '' then scopes[#scopes + 1] = {'c', hint} end
if det ~= '' and det ~= hint then scopes[#scopes + 1] = {'c', det} end
local cid = det
if cid == '' then cid = hint end
local fa = redis.call('HGET', flags, 'a:' .. aid) or ''
local fh, fd = '', ''
if hint ~= '' then fh = redis.call('HGET', flags, 'c:' .. hint) or '' end
if det ~= '' then fd = redis.call('HGET', flags, 'c:' .. det) or '' end
for i, s in ipairs(scopes) do
  local block = math.min(i, 3) - 1
  for j = 1, 4 do
    local lim = tonumber(ARGV[5 + 4 * block + j])
    if lim > 0 then
      local k = pre .. names[j] .. ':' .. s[1] .. ':' .. s[2]
      local b = math.floor(now / widths[j])
      local K = periods[j] / widths[j]
      if live(k, b, K) >= lim then
        return {0, s[1], names[j], hint, det, fa, fh, fd, retry_after(k, b, K, lim, now, widths[j])}
      end
    end
  end
end
for i, s in ipairs(scopes) do
  local block = math.min(i, 3) - 1
  for j = 1, 2 do
    if tonumber(ARGV[5 + 4 * block + j]) > 0 then
      add(pre .. names[j] .. ':' .. s[1] .. ':' .. s[2], math.floor(now / widths[j]), periods[j] / widths[j], 1,
          periods[j] + 2 * widths[j])
    end
  end
end
return {1, '', '', hint, det, fa, fh, fd, 0}
"""

_TOKENS_LUA = _SLIDING_LUA + """
local pre = ARGV[1]
local now = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  for j = 3, 4 do
    add(pre .. names[j] .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1], math.floor(now / widths[j]), periods[j] / widths[j], n,
        periods[j] + 2 * widths[j])
  end
end
return 1
"""


class RedisState:
    """Quotas and flags shared through Redis (``--redis URL``); raises :class:`StateBackendError`
    when Redis cannot be reached, and the gateway then fails open or closed as its policy says.

    Commands go through :class:`~distillguard.gateway.resp.RespClient`: one pipelined connection, so
    any number of concurrent requests can be admitted (a connection pool with a cap would refuse
    the requests over it, which fail-open would have admitted without quotas)."""

    backend = "redis"

    def __init__(self, *, url: str, namespace: str = "distillguard", timeout_s: float = 0.5):
        from distillguard.gateway.resp import RespClient

        self.url = url
        self.prefix = f"dg:{{{namespace}}}:"
        self.flags_key = self.prefix + "flags"
        try:
            self._c = RespClient.from_url(url, timeout_s=timeout_s)
        except ValueError as e:
            from distillguard.errors import ConfigError

            raise ConfigError(f"--redis: {e}; give redis://[:password@]host:port/db") from None

    async def _call(self, *args: Any) -> Any:
        return await self._guard(self._c.call(*args))

    async def _script(self, source: str, args: list) -> Any:
        return await self._guard(self._c.script(source, [self.flags_key], args))

    async def _guard(self, coro: Any) -> Any:
        from distillguard.gateway.resp import RedisReplyError, RedisUnavailable

        try:
            return await coro
        except RedisUnavailable as e:
            raise StateBackendError(f"Redis at {self.url} is unreachable ({e}); "
                                    "start it or run the gateway without --redis") from None
        except RedisReplyError as e:  # MOVED (a cluster node not owning the slot), OOM, READONLY, ...
            raise StateBackendError(f"Redis at {self.url} answered an error ({str(e)[:200]}); point --redis at a "
                                    "writable primary that holds the dg:{namespace} slot") from None

    async def admit(self, key_id: str, account_id: str, cluster_hint: str, limits: list[int], *, now: float) -> Admission:
        res = await self._script(_ADMIT_LUA, [self.prefix, repr(now), key_id, account_id, cluster_hint or "", *limits])
        ok, scope, lname, hint, det, fa, fh, fd, retry = (b.decode() if isinstance(b, bytes) else b for b in res)
        clusters = tuple(c for c in dict.fromkeys((hint, det)) if c)
        load = lambda t: orjson.loads(t) if t else None  # noqa: E731
        return Admission(bool(ok), _SCOPE_NAMES.get(scope, ""), lname, int(retry) if not ok else 0,
                         det or hint or None, load(fa), _merge_flags(load(fh), load(fd)), clusters)

    async def add_tokens(self, key_id: str, account_id: str, clusters: tuple[str, ...], tokens: int, *,
                         now: float) -> None:
        if tokens <= 0:
            return
        args = [self.prefix, repr(now), tokens, "k", key_id, "a", account_id]
        for c in clusters:
            args += ["c", c]
        await self._script(_TOKENS_LUA, args)

    async def set_flag(self, kind: str, ident: str, flag: dict | None) -> None:
        if flag is None:
            await self._call("HDEL", self.flags_key, f"{kind}:{ident}")
        else:
            await self._call("HSET", self.flags_key, f"{kind}:{ident}", orjson.dumps(flag))

    async def set_account_cluster(self, account_id: str, cluster_id: str) -> None:
        await self._call("HSET", self.flags_key, "ac:" + account_id, cluster_id)

    @staticmethod
    def _pairs(flat: list) -> dict[bytes, bytes]:
        return dict(zip(flat[::2], flat[1::2]))

    async def all_flags(self) -> dict[str, dict]:
        raw = self._pairs(await self._call("HGETALL", self.flags_key))
        out = {}
        for k, v in raw.items():
            k = k.decode()
            if k.startswith(("a:", "c:")):
                out[k] = orjson.loads(v)
        return out

    async def publish_key(self, key_hash: str, account_id: str, api_key_id: str) -> None:
        """Share a key created through the admin API (only its hash) with every gateway."""
        await self._call("HSET", self.prefix + "keys", key_hash,
                         orjson.dumps({"account_id": account_id, "api_key_id": api_key_id}))

    async def publish_revoke(self, api_key_id: str) -> None:
        await self._call("SADD", self.prefix + "revoked", api_key_id)

    async def key_events(self) -> tuple[dict[str, dict], set[str]]:
        """(shared keys by hash, revoked key ids), for the gateways' periodic key sync."""
        keys = self._pairs(await self._call("HGETALL", self.prefix + "keys"))
        revoked = await self._call("SMEMBERS", self.prefix + "revoked")
        return ({k.decode(): orjson.loads(v) for k, v in keys.items()}, {r.decode() for r in revoked})

    async def ping(self) -> bool:
        try:
            return bool(await self._call("PING"))
        except StateBackendError:
            return False

    async def close(self) -> None:
        await self._c.close()


def make_state(redis_url: str | None, *, namespace: str = "distillguard") -> MemoryState | RedisState:
    return RedisState(url=redis_url, namespace=namespace) if redis_url else MemoryState()
