"""Per-minute windows of failed authentications, per key prefix and client IP: in Redis when one is
configured (shared by every API process), in this process otherwise (and, through
``audit.auth_failures``, whenever Redis fails or is slow).

A window is (window index, client IP, key prefix) -> (count, what its first failure named). Beyond
``keys_per_ip`` distinct prefixes for one IP in one window, further prefixes are counted together
under ``*``, so a flood of random keys from one address costs a bounded number of windows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

OVERFLOW = "*"
"""The key prefix under which one IP's prefixes beyond ``keys_per_ip`` in a window are counted."""
_MAX_WINDOWS_IN_PROCESS = 50_000
_TAKE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class WindowHit:
    key_prefix: str
    """The window's prefix: the key's own, or ``*`` past the IP's distinct-prefix budget."""
    count: int
    """Failures in this window so far, this one included: 1 means the first."""


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    window: int
    ip: str
    key_prefix: str
    count: int
    first: dict[str, Any]


class FailureWindows(Protocol):
    async def hit(self, window: int, ip: str, key_prefix: str, first: dict[str, Any]) -> WindowHit:
        """Count one failure; ``first`` is kept when it opens the window."""
        ...

    async def take_closed(self, before: int) -> list[ClosedWindow]:
        """Remove and return the windows whose index is below ``before`` (each returned once, to
        one caller, however many processes ask)."""
        ...


class MemoryWindows:
    """The windows in this process (the embedded mode, and Redis's stand-in). Never awaits inside a
    hit, so hits are atomic within one event loop."""

    def __init__(self, keys_per_ip: int) -> None:
        self._keys_per_ip = keys_per_ip
        self._counts: dict[tuple[int, str, str], tuple[int, dict[str, Any]]] = {}
        self._prefixes: dict[tuple[int, str], set[str]] = {}

    async def hit(self, window: int, ip: str, key_prefix: str, first: dict[str, Any]) -> WindowHit:
        seen = self._prefixes.setdefault((window, ip), set())
        if key_prefix not in seen:
            if len(seen) >= self._keys_per_ip:
                key_prefix = OVERFLOW
            else:
                seen.add(key_prefix)
        key = (window, ip, key_prefix)
        if key not in self._counts and len(self._counts) >= _MAX_WINDOWS_IN_PROCESS:
            key = (window, OVERFLOW, OVERFLOW)  # a flood from everywhere at once: one window
        count, opened_by = self._counts.get(key, (0, first))
        self._counts[key] = (count + 1, opened_by)
        return WindowHit(key[2], count + 1)

    async def take_closed(self, before: int) -> list[ClosedWindow]:
        closed = [key for key in self._counts if key[0] < before]
        taken = [ClosedWindow(*key, *self._counts.pop(key)) for key in closed]
        for key in [key for key in self._prefixes if key[0] < before]:
            del self._prefixes[key]
        return taken


_TAG = "{payorch:auth-failures}"  # every key in one Redis Cluster slot, so each script is atomic
_COUNTS, _FIRSTS, _DUE = f"{_TAG}:counts", f"{_TAG}:firsts", f"{_TAG}:due"

_HIT_LUA = """
local prefix = ARGV[3]
if redis.call('SISMEMBER', KEYS[4], prefix) == 0 then
  if redis.call('SCARD', KEYS[4]) >= tonumber(ARGV[4]) then
    prefix = '*'
  else
    redis.call('SADD', KEYS[4], prefix)
  end
end
redis.call('EXPIRE', KEYS[4], ARGV[5])
local field = ARGV[1] .. '|' .. ARGV[2] .. '|' .. prefix
local n = redis.call('HINCRBY', KEYS[1], field, 1)
if n == 1 then
  redis.call('HSET', KEYS[2], field, ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[1], field)
end
return {prefix, n}
"""
_TAKE_LUA = """
local fields = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, field in ipairs(fields) do
  out[#out + 1] = field
  out[#out + 1] = redis.call('HGET', KEYS[1], field) or '0'
  out[#out + 1] = redis.call('HGET', KEYS[2], field) or '{}'
  redis.call('HDEL', KEYS[1], field)
  redis.call('HDEL', KEYS[2], field)
  redis.call('ZREM', KEYS[3], field)
end
return out
"""
_HIT_SHA = hashlib.sha1(_HIT_LUA.encode(), usedforsecurity=False).hexdigest()
_TAKE_SHA = hashlib.sha1(_TAKE_LUA.encode(), usedforsecurity=False).hexdigest()


class RedisWindows:
    """The windows in Redis, shared by every API process: one script call per failure."""

    def __init__(self, redis: Redis | RedisCluster, *, keys_per_ip: int, window_seconds: int) -> None:
        self._redis = redis
        self._keys_per_ip = keys_per_ip
        self._ttl = 3 * window_seconds

    async def hit(self, window: int, ip: str, key_prefix: str, first: dict[str, Any]) -> WindowHit:
        keys = (_COUNTS, _FIRSTS, _DUE, f"{_TAG}:prefixes:{window}|{ip}")
        args = (window, ip, key_prefix, self._keys_per_ip, self._ttl, json.dumps(first, sort_keys=True))
        prefix, count = await self._script(_HIT_SHA, _HIT_LUA, keys, args)
        return WindowHit(_text(prefix), int(count))

    async def take_closed(self, before: int) -> list[ClosedWindow]:
        reply = await self._script(_TAKE_SHA, _TAKE_LUA, (_COUNTS, _FIRSTS, _DUE), (before, _TAKE_LIMIT))
        taken: list[ClosedWindow] = []
        for offset in range(0, len(reply), 3):
            window, ip, key_prefix = _text(reply[offset]).split("|", 2)
            first = json.loads(_text(reply[offset + 2]))
            taken.append(ClosedWindow(int(window), ip, key_prefix, int(reply[offset + 1]), first))
        return taken

    async def _script(self, sha: str, lua: str, keys: tuple[str, ...], args: tuple[Any, ...]) -> Any:
        try:
            return await self._redis.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._redis.eval(lua, len(keys), *keys, *args)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
