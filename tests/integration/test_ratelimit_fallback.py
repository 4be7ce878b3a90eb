"""Redis going away, hanging and coming back, on a redis-server this test owns (never the shared one)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis
from redis_cluster import RedisServer, redis_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from payorch.ratelimit import (
    FallbackLimiter,
    RateLimitConfig,
    RateLimitMiddleware,
    RedisLimiter,
    build_limiter,
)


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture
async def redis(own_redis: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(own_redis.url, socket_connect_timeout=0.5, socket_timeout=0.5)
    yield client
    await client.aclose()


class Harness:
    def __init__(self, redis: Redis, timeout_ms: int) -> None:
        self.prefix = f"rltest-{uuid.uuid4().hex[:12]}"
        self.config = RateLimitConfig(
            key_limit={"requests": 5, "window_seconds": 60},
            ip_limit={"requests": 10_000, "window_seconds": 60},
            redis_timeout_ms=timeout_ms,
            fallback_probe_interval_seconds=0.05,
        )
        self.fallbacks = 0
        limiter = build_limiter(self.config, redis, prefix=self.prefix, on_fallback=self._count)
        assert isinstance(limiter, FallbackLimiter)
        self.limiter = limiter
        app = RateLimitMiddleware(Starlette(routes=[Route("/v1/charges", ok)]), limiter, self.config)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.30", 5000))
        self.http = httpx.AsyncClient(transport=transport, base_url="http://test")

    def _count(self) -> None:
        self.fallbacks += 1

    async def get(self, token: str) -> int:
        response = await self.http.get("/v1/charges", headers={"Authorization": f"Bearer {token}"})
        return response.status_code

    async def wait_back_on_redis(self) -> None:
        deadline = time.monotonic() + 15
        while self.limiter.degraded:
            assert time.monotonic() < deadline, "limiter never returned to Redis"
            assert await self.get(f"sk_test_probe_{uuid.uuid4().hex}") == 200
            await asyncio.sleep(0.05)

    def storage_key(self, token: str) -> str:
        return f"key:{hashlib.sha256(token.encode()).hexdigest()}:default"


async def test_redis_stopped_then_restarted(
    own_redis: RedisServer, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(redis, timeout_ms=500)
    async with harness.http:
        assert [await harness.get("sk_test_a") for _ in range(3)] == [200] * 3
        assert not harness.limiter.degraded
        assert await redis.dbsize() > 0

        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="payorch.ratelimit"):
            during = [await harness.get("sk_test_b") for _ in range(8)]
        # Served and still limited, in process: 5 allowed, then refused; never a 5xx.
        assert during == [200] * 5 + [429] * 3
        assert harness.limiter.degraded
        assert harness.fallbacks >= 8
        assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1

        own_redis.start()
        await harness.wait_back_on_redis()
        # The shared limiter is back: another process's limiter sees what this one spent.
        assert [await harness.get("sk_test_c") for _ in range(3)] == [200] * 3
        other = RedisLimiter(redis, prefix=harness.prefix)
        decision = await other.hit(harness.storage_key("sk_test_c"), 5, 60)
        assert (decision.allowed, decision.remaining) == (True, 1)


async def test_redis_slower_than_its_timeout_is_answered_in_process(own_redis: RedisServer, redis: Redis) -> None:
    harness = Harness(redis, timeout_ms=100)
    admin = Redis.from_url(own_redis.url)
    async with harness.http:
        assert await harness.get("sk_test_d") == 200
        assert not harness.limiter.degraded
        await admin.client_pause(700)  # every command now hangs for 0.7 s
        assert await harness.get("sk_test_d") == 200
        assert harness.limiter.degraded
        await harness.wait_back_on_redis()
        assert await harness.get("sk_test_d") == 200
    await admin.aclose()
