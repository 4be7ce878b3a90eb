"""Sliding-window-counter limiters: on Redis (one Lua call per decision), in process, and the two
combined so that Redis trouble never turns into a refused or failed request.

The algorithm (docs/ratelimiting.md): time is cut into windows of ``window`` aligned on the clock.
A key keeps the cost spent in the current window (``c``) and in the one before (``p``). The usage at
``elapsed`` into the current window is ``p * (window - elapsed) / window + c``: the previous window
is assumed spread evenly and slides out linearly. A hit of ``cost`` is allowed when usage plus cost
fits the limit, and only an allowed hit is counted. Each key's state names its own window, so no
expiry is ever pushed forward by traffic: the seed's INCR-then-EXPIRE lock-out cannot happen.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import NoScriptError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    """Cost units still available right now (after this hit if it was allowed)."""
    reset_after: float
    """Seconds until the key's usage has drained to zero, i.e. the full quota is back."""
    retry_after: float
    """Seconds until a hit of the same cost would be allowed; 0 when this one was."""


class Limiter(Protocol):
    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        """Spend ``cost`` units of ``key``'s budget of ``limit`` per ``window_s`` if they fit."""
        ...


Hit = tuple[str, int, int, int]
"""One decision to make: key, limit, window in seconds, cost."""


async def hit_all(limiter: Limiter, hits: Sequence[Hit]) -> list[Decision]:
    """Every decision of one request, each made on its own (one refusal spends nothing elsewhere
    and takes nothing back): in one round trip where the limiter can (``hit_many``)."""
    many = getattr(limiter, "hit_many", None)
    if many is not None:
        decisions: list[Decision] = await many(hits)
        return decisions
    return list(await asyncio.gather(*(limiter.hit(*one) for one in hits)))


def _decide(
    *, prev: int, curr: int, elapsed_ms: int, window_ms: int, limit: int, cost: int
) -> tuple[bool, int, Decision]:
    """The pure algorithm; ``_SLIDING_WINDOW_LUA`` is the same, line for line. Returns (allowed,
    new count of the current window, decision)."""
    used = prev * (window_ms - elapsed_ms) / window_ms + curr
    allowed = used + cost <= limit
    if allowed:
        curr += cost
        used += cost
    retry_ms = 0
    if not allowed:
        if cost > limit:
            retry_ms = 2 * window_ms - elapsed_ms
        elif curr + cost <= limit:
            retry_ms = math.ceil(window_ms - (limit - curr - cost) * window_ms / prev) - elapsed_ms
        else:
            retry_ms = window_ms - elapsed_ms + math.ceil(window_ms - (limit - cost) * window_ms / curr)
        retry_ms = max(retry_ms, 1)
    if curr > 0:
        reset_ms = 2 * window_ms - elapsed_ms
    elif prev > 0:
        reset_ms = window_ms - elapsed_ms
    else:
        reset_ms = 0
    remaining = max(0, math.floor(limit - used))
    return allowed, curr, Decision(allowed, limit, remaining, reset_ms / 1000, retry_ms / 1000)


# KEYS[1]: a hash {w: window index, c: cost spent in it, p: cost spent in the window before}.
# ARGV: limit, window in ms, cost. Redis's own clock is used so every API process agrees on time.
_SLIDING_WINDOW_LUA = """
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = math.floor(now / window)
local elapsed = now - index * window
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w, c, p = tonumber(state[1]), tonumber(state[2]) or 0, tonumber(state[3]) or 0
if w == nil then
  c, p = 0, 0
elseif w > index then
  index, elapsed = w, 0
elseif w == index - 1 then
  p, c = c, 0
elseif w ~= index then
  c, p = 0, 0
end
local used = p * (window - elapsed) / window + c
local allowed = 0
if used + cost <= limit then
  allowed = 1
  c = c + cost
  used = used + cost
  redis.call('HSET', KEYS[1], 'w', index, 'c', c, 'p', p)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
end
local retry = 0
if allowed == 0 then
  if cost > limit then
    retry = 2 * window - elapsed
  elseif c + cost <= limit then
    retry = math.ceil(window - (limit - c - cost) * window / p) - elapsed
  else
    retry = window - elapsed + math.ceil(window - (limit - cost) * window / c)
  end
  if retry < 1 then retry = 1 end
end
local reset = 0
if c > 0 then reset = 2 * window - elapsed elseif p > 0 then reset = window - elapsed end
local remaining = math.floor(limit - used)
if remaining < 0 then remaining = 0 end
return {allowed, remaining, reset, retry}
"""
_SCRIPT_SHA = hashlib.sha1(_SLIDING_WINDOW_LUA.encode(), usedforsecurity=False).hexdigest()

# The same script for several keys at once (standalone Redis only: a cluster needs one slot per
# script), each decided independently, as a function over the single-key body word for word.
_HEADER = "local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
if not _SLIDING_WINDOW_LUA.startswith("\n" + _HEADER):
    raise RuntimeError("the sliding-window script changed shape: update _MANY_LUA")
_MANY_LUA = (
    "local function decide(key, limit, window, cost)\n"
    + _SLIDING_WINDOW_LUA[len(_HEADER) + 1 :].replace("KEYS[1]", "key")
    + """end
local out = {}
for i = 1, #KEYS do
  local r = decide(KEYS[i], tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]))
  for j = 1, 4 do out[#out + 1] = r[j] end
end
return out
"""
)
_MANY_SHA = hashlib.sha1(_MANY_LUA.encode(), usedforsecurity=False).hexdigest()


def _storage_key(prefix: str, key: str, window_s: int) -> str:
    # Everything of one decision sits under one hash tag, hence in one Redis Cluster slot.
    tag = f"{prefix}:{key}".replace("{", "(").replace("}", ")")
    return f"{{{tag}}}:w{window_s}"


class RedisLimiter:
    """The shared limiter: one EVALSHA per decision (EVAL once per node when the script is not
    cached there yet). Works with ``redis.asyncio.Redis`` and ``redis.asyncio.RedisCluster``."""

    def __init__(self, redis: Redis | RedisCluster, *, prefix: str = "rl") -> None:
        self._redis = redis
        self._prefix = prefix

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        storage_key = _storage_key(self._prefix, key, window_s)
        args = (limit, window_s * 1000, cost)
        try:
            reply = await self._redis.evalsha(_SCRIPT_SHA, 1, storage_key, *args)
        except NoScriptError:
            reply = await self._redis.eval(_SLIDING_WINDOW_LUA, 1, storage_key, *args)
        allowed, remaining, reset_ms, retry_ms = (int(value) for value in reply)
        return Decision(bool(allowed), limit, remaining, reset_ms / 1000, retry_ms / 1000)

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """Several decisions in one EVALSHA on a standalone Redis; one call each on a cluster."""
        if isinstance(self._redis, RedisCluster) or len(hits) < 2:
            return list(await asyncio.gather(*(self.hit(*one) for one in hits)))
        keys = [_storage_key(self._prefix, key, window_s) for key, _, window_s, _ in hits]
        args = [value for _, limit, window_s, cost in hits for value in (limit, window_s * 1000, cost)]
        try:
            reply = await self._redis.evalsha(_MANY_SHA, len(keys), *keys, *args)
        except NoScriptError:
            reply = await self._redis.eval(_MANY_LUA, len(keys), *keys, *args)
        values = [int(value) for value in reply]
        return [
            Decision(
                bool(values[4 * i]), hits[i][1], values[4 * i + 1], values[4 * i + 2] / 1000, values[4 * i + 3] / 1000
            )
            for i in range(len(hits))
        ]


class MemoryLimiter:
    """The same algorithm in this process: the embedded mode's limiter and Redis's stand-in.
    Decisions never await, so they are atomic within one event loop."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sweep_interval_s: float = 10.0) -> None:
        self._clock = clock
        self._sweep_interval = sweep_interval_s
        self._next_sweep = clock() + sweep_interval_s
        # storage key -> [window index, current count, previous count, window ms]
        self._state: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self._state)

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        now_s = self._clock()
        now_ms = int(now_s * 1000)
        window_ms = window_s * 1000
        index, elapsed = divmod(now_ms, window_ms)
        storage_key = _storage_key("", key, window_s)
        state = self._state.get(storage_key)
        prev = curr = 0
        if state is not None:
            if state[0] == index:
                curr, prev = state[1], state[2]
            elif state[0] == index - 1:
                prev = state[1]
        allowed, curr, decision = _decide(
            prev=prev, curr=curr, elapsed_ms=elapsed, window_ms=window_ms, limit=limit, cost=cost
        )
        if allowed:
            self._state[storage_key] = [index, curr, prev, window_ms]
        if now_s >= self._next_sweep:
            self._sweep(now_ms)
            self._next_sweep = now_s + self._sweep_interval
        return decision

    def _sweep(self, now_ms: int) -> None:
        stale = [key for key, (index, _, _, window_ms) in self._state.items() if index < now_ms // window_ms - 1]
        for key in stale:
            del self._state[key]


class FallbackLimiter:
    """``primary`` (Redis) while it answers within ``timeout_s``; ``fallback`` (in process) when it
    fails or is slow. While degraded, one request per ``probe_interval_s`` tries Redis again and the
    first success brings every request back to it. Logs once per ``log_interval_s``; calls
    ``on_fallback()`` for every decision answered locally. Never raises."""

    def __init__(
        self,
        primary: Limiter,
        fallback: Limiter,
        *,
        timeout_s: float,
        log_interval_s: float = 60.0,
        probe_interval_s: float = 1.0,
        on_fallback: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._timeout = timeout_s
        self._log_interval = log_interval_s
        self._probe_interval = probe_interval_s
        self._on_fallback = on_fallback
        self._clock = clock
        self._degraded = False
        self._probing = False
        self._next_probe = 0.0
        self._next_log = 0.0
        self._local_decisions = 0

    @property
    def degraded(self) -> bool:
        """True while decisions are answered in process."""
        return self._degraded

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        (decision,) = await self.hit_many([(key, limit, window_s, cost)])
        return decision

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """``hit`` for several keys: one round trip to the primary when it has ``hit_many``."""
        now = self._clock()
        probe = self._degraded and not self._probing and now >= self._next_probe
        if not self._degraded or probe:
            self._probing = probe
            try:
                async with asyncio.timeout(self._timeout):
                    decisions = await hit_all(self._primary, hits)
            except Exception as exc:  # any Redis trouble, timeouts included, means "answer locally"
                self._primary_failed(exc, now)
            else:
                if self._degraded:
                    self._primary_back()
                return decisions
            finally:
                self._probing = False
        return [await self._answer_locally(*one) for one in hits]

    async def _answer_locally(self, key: str, limit: int, window_s: int, cost: int) -> Decision:
        self._local_decisions += 1
        try:
            if self._on_fallback is not None:
                self._on_fallback()
            return await self._fallback.hit(key, limit, window_s, cost)
        except Exception:
            # A limiter must not take the API down with it: let this one request through.
            logger.exception("in-process rate limiter failed; request allowed unlimited")
            return Decision(True, limit, limit, 0.0, 0.0)

    def _primary_failed(self, exc: Exception, now: float) -> None:
        self._next_probe = now + self._probe_interval
        if not self._degraded:
            self._degraded = True
            self._local_decisions = 0
        if now >= self._next_log:
            self._next_log = now + self._log_interval
            logger.warning(
                "Redis rate limiter unavailable (%s: %s); limiting in process (%d decisions so far)",
                type(exc).__name__,
                exc,
                self._local_decisions,
            )

    def _primary_back(self) -> None:
        self._degraded = False
        self._next_log = 0.0
        logger.warning("Redis rate limiter is back after %d in-process decisions", self._local_decisions)
