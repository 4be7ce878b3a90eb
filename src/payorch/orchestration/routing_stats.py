"""The statistics ``success_rate`` routing reads: each account's approvals and failures per
(account, currency, card network) over a sliding window of time buckets.

Shared across API replicas through Redis (so one replica's restart loses nothing), in process when
embedded. Only outcomes that speak of the gateway count (:func:`attributable`). Reading or writing
them never fails a charge: an unreachable Redis makes ``counts`` answer None (the router falls back
to the rule's static order) and is not asked again for a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from payorch.gateways.base import GatewayResult, Outcome

log = logging.getLogger(__name__)

BUCKETS = 15
"""The window is this many buckets: it slides by one bucket's length at a time."""
REDIS_TIMEOUT_SECONDS = 0.25
"""A charge waits at most this long for the statistics before routing without them."""
REDIS_RETRY_SECONDS = 5.0


def attributable(result: GatewayResult) -> bool | None:
    """True: counts for the account; False: against it; None: says nothing of the gateway (a hard
    decline speaks of the customer's card; a refused request of its input; our own open breaker
    never reached the gateway)."""
    if result.outcome is Outcome.APPROVED:
        return True
    if result.outcome is Outcome.HARD_DECLINE:
        return None
    if result.outcome is Outcome.NOT_SENT and (result.request_refused or result.code == "breaker_open"):
        return None
    return False


class _Window:
    def __init__(self, window_seconds: int, clock: Callable[[], float]) -> None:
        self.bucket_seconds = max(1, window_seconds // BUCKETS)
        self.window_seconds = window_seconds
        self._clock = clock

    def current(self) -> int:
        return int(self._clock() // self.bucket_seconds)

    def live(self) -> range:
        now = self.current()
        return range(now - BUCKETS + 1, now + 1)


class MemorySuccessRates:
    """The embedded mode's statistics, in this process only."""

    def __init__(self, window_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._window = _Window(window_seconds, clock)
        self._buckets: dict[tuple[str, str, str], dict[int, list[int]]] = {}

    async def counts(self, keys: Sequence[str], currency: str, network: str) -> dict[str, tuple[int, int]] | None:
        live = self._window.live()
        answer = {}
        for key in keys:
            buckets = self._buckets.get((key, currency, network), {})
            answer[key] = (
                sum(buckets[b][0] for b in live if b in buckets),
                sum(buckets[b][1] for b in live if b in buckets),
            )
        return answer

    async def record(self, key: str, currency: str, network: str, approved: bool) -> None:
        buckets = self._buckets.setdefault((key, currency, network), {})
        now = self._window.current()
        for stale in [b for b in buckets if b <= now - BUCKETS]:
            del buckets[stale]
        buckets.setdefault(now, [0, 0])[0 if approved else 1] += 1


class RedisSuccessRates:
    """One Redis hash per (account, currency, network), a field per bucket and side; a read is one
    pipelined round trip for every candidate, a write one ``HINCRBY`` with its expiry."""

    def __init__(
        self, redis: Any, window_seconds: int, *, prefix: str = "payorch:sr", clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._window = _Window(window_seconds, clock)
        self._prefix = prefix
        self._retry_at = 0.0

    def _key(self, key: str, currency: str, network: str) -> str:
        return f"{self._prefix}:{key}:{currency}:{network}"

    async def counts(self, keys: Sequence[str], currency: str, network: str) -> dict[str, tuple[int, int]] | None:
        if time.monotonic() < self._retry_at:
            return None
        live = list(self._window.live())
        fields = [f"{b}:{side}" for b in live for side in ("a", "f")]
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                pipe = self._redis.pipeline(transaction=False)
                for key in keys:
                    pipe.hmget(self._key(key, currency, network), fields)
                rows = await pipe.execute()
        except Exception as error:
            self._unavailable("read", error)
            return None
        answer = {}
        for key, values in zip(keys, rows, strict=True):
            numbers = [int(v) if v is not None else 0 for v in values]
            answer[key] = (sum(numbers[0::2]), sum(numbers[1::2]))
        return answer

    async def record(self, key: str, currency: str, network: str, approved: bool) -> None:
        if time.monotonic() < self._retry_at:
            return
        name = self._key(key, currency, network)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_SECONDS):
                pipe = self._redis.pipeline(transaction=False)
                pipe.hincrby(name, f"{self._window.current()}:{'a' if approved else 'f'}", 1)
                pipe.expire(name, self._window.window_seconds + 2 * self._window.bucket_seconds)
                await pipe.execute()
        except Exception as error:
            self._unavailable("write", error)

    def _unavailable(self, what: str, error: Exception) -> None:
        self._retry_at = time.monotonic() + REDIS_RETRY_SECONDS
        log.warning(
            "success-rate statistics: %s failed (%s); static order for %.0f s", what, error, REDIS_RETRY_SECONDS
        )


class OutcomeRecorder:
    """Feeds finished attempts to the statistics off the charge's path (a task each, kept until done)."""

    def __init__(self, store: MemorySuccessRates | RedisSuccessRates) -> None:
        self._store = store
        self._pending: set[asyncio.Task[None]] = set()

    def note(self, key: str, currency: str, network: str, result: GatewayResult) -> None:
        counted = attributable(result)
        if counted is None:
            return
        task = asyncio.create_task(self._store.record(key, currency, network, counted))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for the writes under way (at stop, and in tests)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
