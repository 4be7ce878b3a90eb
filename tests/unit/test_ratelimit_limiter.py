"""The sliding-window counter, the in-process limiter on a fake clock, and the Redis fallback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from payorch.ratelimit import Decision, FallbackLimiter, MemoryLimiter
from payorch.ratelimit.limiter import _decide


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_fresh_key_allows_up_to_the_limit_and_counts_only_allowed_hits() -> None:
    allowed, curr, decision = _decide(prev=0, curr=9, elapsed_ms=500, window_ms=1000, limit=10, cost=1)
    assert (allowed, curr, decision.remaining) == (True, 10, 0)
    allowed, curr, decision = _decide(prev=0, curr=10, elapsed_ms=500, window_ms=1000, limit=10, cost=1)
    assert (allowed, curr, decision.remaining) == (False, 10, 0)


def test_previous_window_slides_out_linearly() -> None:
    # 3/4 into the window, a full previous window still weighs 2.5 of 10.
    allowed, _, decision = _decide(prev=10, curr=7, elapsed_ms=750, window_ms=1000, limit=10, cost=1)
    assert not allowed
    assert decision.retry_after == pytest.approx(0.05)
    allowed, _, decision = _decide(prev=10, curr=6, elapsed_ms=750, window_ms=1000, limit=10, cost=1)
    assert allowed
    assert decision.remaining == 0  # 9.5 of 10 used: no whole request fits any more


def test_retry_after_is_exactly_when_the_same_hit_would_fit() -> None:
    for prev, curr, elapsed, cost in [(10, 7, 750, 1), (10, 10, 200, 1), (4, 9, 100, 3), (0, 10, 999, 2)]:
        allowed, _, decision = _decide(prev=prev, curr=curr, elapsed_ms=elapsed, window_ms=1000, limit=10, cost=cost)
        assert not allowed
        later = elapsed + round(decision.retry_after * 1000)
        if later < 1000:
            fits, _, _ = _decide(prev=prev, curr=curr, elapsed_ms=later, window_ms=1000, limit=10, cost=cost)
            too_soon, _, _ = _decide(prev=prev, curr=curr, elapsed_ms=later - 1, window_ms=1000, limit=10, cost=cost)
        else:
            fits, _, _ = _decide(prev=curr, curr=0, elapsed_ms=later - 1000, window_ms=1000, limit=10, cost=cost)
            too_soon, _, _ = _decide(prev=curr, curr=0, elapsed_ms=later - 1001, window_ms=1000, limit=10, cost=cost)
        assert fits
        assert not too_soon


def test_cost_above_the_limit_never_fits() -> None:
    allowed, _, decision = _decide(prev=0, curr=0, elapsed_ms=0, window_ms=1000, limit=3, cost=4)
    assert not allowed
    assert decision.retry_after > 0


async def test_steady_client_below_its_limit_is_never_refused_over_many_windows() -> None:
    # The seed's INCR-then-EXPIRE refuses this client forever once it first reaches 10.
    clock = FakeClock(start=1_000_000.3)
    limiter = MemoryLimiter(clock=clock)
    refused = 0
    for _ in range(2_000):  # 9 a second for ~222 windows, at a phase that is not window-aligned
        decision = await limiter.hit("steady", limit=10, window_s=1)
        refused += not decision.allowed
        clock.advance(1 / 9)
    assert refused == 0


async def test_burst_allows_exactly_the_limit_then_recovers() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock)
    results = [await limiter.hit("burst", limit=100, window_s=60) for _ in range(150)]
    assert sum(d.allowed for d in results) == 100
    refused = results[-1]
    assert refused.remaining == 0
    clock.advance(refused.retry_after)
    assert (await limiter.hit("burst", limit=100, window_s=60)).allowed


async def test_allowed_in_any_window_stays_within_five_percent_of_the_limit() -> None:
    # A client hammering as fast as it is let through, measured over many sliding windows.
    clock = FakeClock(start=5_000_000.0)
    limiter = MemoryLimiter(clock=clock)
    allowed_at: list[float] = []
    for _ in range(20_000):
        if (await limiter.hit("greedy", limit=100, window_s=10)).allowed:
            allowed_at.append(clock.now)
        clock.advance(0.01)
    start = allowed_at[0]
    worst = max(
        sum(1 for t in allowed_at if s <= t < s + 10)
        for s in (start + k * 0.37 for k in range(int((allowed_at[-1] - start - 10) / 0.37)))
    )
    assert 100 <= worst <= 105


async def test_memory_limiter_forgets_idle_keys() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock=clock, sweep_interval_s=1)
    for n in range(50):
        await limiter.hit(f"client{n}", limit=5, window_s=1)
    clock.advance(5)
    await limiter.hit("late", limit=5, window_s=1)
    assert len(limiter) == 1


class BrokenRedis:
    def __init__(self) -> None:
        self.calls = 0
        self.broken = True
        self.hang = False

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:  # noqa: ARG002
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.broken:
            raise ConnectionError("Connection refused")
        return Decision(True, limit, limit - cost, window_s, 0.0)


async def test_fallback_answers_from_memory_logs_once_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    primary = BrokenRedis()
    fallbacks: list[None] = []
    limiter = FallbackLimiter(
        primary,
        MemoryLimiter(clock=clock),
        timeout_s=1,
        log_interval_s=60,
        probe_interval_s=1,
        on_fallback=lambda: fallbacks.append(None),
        clock=clock,
    )
    with caplog.at_level(logging.WARNING, logger="payorch.ratelimit"):
        decisions = [await limiter.hit("k", limit=3, window_s=60) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert limiter.degraded
    assert len(fallbacks) == 5
    assert primary.calls == 1  # no second try before the probe interval
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1

    clock.advance(61)
    with caplog.at_level(logging.WARNING, logger="payorch.ratelimit"):
        await limiter.hit("k", limit=3, window_s=60)
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 2

    primary.broken = False
    clock.advance(1)
    decision = await limiter.hit("k", limit=3, window_s=60)
    assert decision.remaining == 2  # answered by the primary again
    assert not limiter.degraded


async def test_slow_primary_is_cut_off_by_the_timeout() -> None:
    primary = BrokenRedis()
    primary.hang = True
    limiter = FallbackLimiter(primary, MemoryLimiter(), timeout_s=0.02)
    decision = await limiter.hit("k", limit=3, window_s=60)
    assert decision.allowed
    assert limiter.degraded


async def test_fallback_never_raises_even_if_both_fail() -> None:
    class Broken:
        async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:  # noqa: ARG002
            raise RuntimeError("boom")

    limiter = FallbackLimiter(Broken(), Broken(), timeout_s=1)
    decision = await limiter.hit("k", limit=3, window_s=60)
    assert decision.allowed
