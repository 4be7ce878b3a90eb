"""The Redis limiter against real Redis: the shared server (``PAYORCH_TEST_REDIS_URL``, default
127.0.0.1:6379, every test on its own key prefix) and a 3-master Redis Cluster started here.

The module also holds the tiny app that the two-process accuracy test serves with uvicorn.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis, RedisCluster
from redis_cluster import RedisClusterHarness, free_port, redis_cluster
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from payorch.ratelimit import Decision, Limiter, RateLimitConfig, RateLimitMiddleware, RedisLimiter

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"
SHARED_REDIS_URL = os.environ.get("PAYORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def connect(url: str, cluster: bool) -> Redis | RedisCluster:
    return RedisCluster.from_url(url) if cluster else Redis.from_url(url)


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


class LateLimiter:
    """Stands in for a RedisLimiter whose client can only be made inside the server's event loop."""

    def __init__(self) -> None:
        self.inner: RedisLimiter | None = None

    async def hit(self, key: str, limit: int, window_s: int, cost: int = 1) -> Decision:
        assert self.inner is not None
        return await self.inner.hit(key, limit, window_s, cost)


def limited_app(limiter: Limiter, config: RateLimitConfig) -> ASGIApp:
    inner = Starlette(routes=[Route("/v1/charges", ok), Route("/healthz", ok)])
    return RateLimitMiddleware(inner, limiter, config)


def create_app() -> ASGIApp:
    """uvicorn --factory entry point for the two-process test."""
    config = RateLimitConfig(
        key_limit={"requests": int(os.environ["RL_LIMIT"]), "window_seconds": int(os.environ["RL_WINDOW"])},
        ip_limit={"requests": 1_000_000, "window_seconds": 60},
    )
    limiter = LateLimiter()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = connect(os.environ["RL_REDIS_URL"], os.environ["RL_CLUSTER"] == "1")
        if isinstance(redis, RedisCluster):
            await redis.initialize()
        limiter.inner = RedisLimiter(redis, prefix=os.environ["RL_PREFIX"])
        yield
        await redis.aclose()

    inner = Starlette(routes=[Route("/v1/charges", ok), Route("/healthz", ok)], lifespan=lifespan)
    return RateLimitMiddleware(inner, limiter, config)


@dataclass
class Backend:
    kind: str
    url: str
    client: Redis | RedisCluster

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterHarness]:
    with redis_cluster(masters=3) as harness:
        yield harness


@pytest.fixture(params=["standalone", "cluster"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "cluster":
        url = request.getfixturevalue("cluster").url
    else:
        url = SHARED_REDIS_URL
    client = connect(url, request.param == "cluster")
    if isinstance(client, RedisCluster):
        await client.initialize()  # as Runtime.build does: concurrent first use races in redis-py
    yield Backend(request.param, url, client)
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    return f"rltest-{uuid.uuid4().hex[:12]}"


AUTH = {"Authorization": "Bearer sk_test_steady"}


async def test_steady_client_below_its_limit_is_never_refused(backend: Backend, prefix: str) -> None:
    """10 per 1 s window, 5 a second for over three windows. The seed's INCR-then-EXPIRE, run on
    the same schedule, pushes its expiry forward forever and refuses the same client."""
    config = RateLimitConfig(key_limit={"requests": 10, "window_seconds": 1})
    app = limited_app(RedisLimiter(backend.client, prefix=prefix), config)
    naive_key = f"{{{prefix}:naive}}"
    ours: list[int] = []
    naive_refused = 0
    transport = httpx.ASGITransport(app=app, client=("203.0.113.20", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        start = time.monotonic()
        for n in range(17):
            # Pace on absolute times so a slow step is not followed by a burst.
            await asyncio.sleep(max(0.0, start + n * 0.2 - time.monotonic()))
            ours.append((await http.get("/v1/charges", headers=AUTH)).status_code)
            count = await backend.client.incr(naive_key)
            await backend.client.expire(naive_key, 1)
            naive_refused += count > 10
    await backend.client.delete(naive_key)
    assert ours == [200] * 17
    assert naive_refused > 0


async def test_concurrent_burst_allows_the_limit_and_no_more(backend: Backend, prefix: str) -> None:
    limiter = RedisLimiter(backend.client, prefix=prefix)
    decisions = await asyncio.gather(*(limiter.hit("burst", 50, 60) for _ in range(80)))
    allowed = sum(decision.allowed for decision in decisions)
    # Exactly 50 unless the burst straddles a window boundary, where at most a sliver slides out.
    assert 50 <= allowed <= 52
    refused = [decision for decision in decisions if not decision.allowed]
    assert all(decision.remaining == 0 and 0 < decision.retry_after <= 120 for decision in refused)


async def test_one_decision_is_one_hash_tagged_key_that_expires(backend: Backend, prefix: str) -> None:
    limiter = RedisLimiter(backend.client, prefix=prefix)
    decision = await limiter.hit("key:abc:default", 5, 30, cost=2)
    assert (decision.allowed, decision.remaining) == (True, 3)
    key = f"{{{prefix}:key:abc:default}}:w30"
    assert await backend.client.exists(key) == 1
    assert 0 < await backend.client.pttl(key) <= 60_000


async def test_script_is_reloaded_after_a_script_flush(backend: Backend, prefix: str) -> None:
    limiter = RedisLimiter(backend.client, prefix=prefix)
    await limiter.hit("flush", 5, 30)
    if backend.cluster:
        for port in await _cluster_ports(backend):
            node = Redis(host="127.0.0.1", port=port)
            await node.script_flush()
            await node.aclose()
    else:
        await backend.client.script_flush()
    decision = await limiter.hit("flush", 5, 30)
    assert (decision.allowed, decision.remaining) == (True, 3)


async def _cluster_ports(backend: Backend) -> list[int]:
    assert isinstance(backend.client, RedisCluster)
    return [int(node.port) for node in backend.client.get_primaries()]


def _serve(backend: Backend, prefix: str, limit: int, window: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "RL_REDIS_URL": backend.url,
        "RL_CLUSTER": "1" if backend.cluster else "0",
        "RL_PREFIX": prefix,
        "RL_LIMIT": str(limit),
        "RL_WINDOW": str(window),
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "--factory", "test_ratelimit_redis:create_app",
            "--app-dir", str(HERE), "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "warning", "--no-access-log",
        ],
        env=env,
    )  # fmt: skip
    return process, f"http://127.0.0.1:{port}"


async def _wait_ready(http: httpx.AsyncClient, process: subprocess.Popen[bytes], base: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert process.poll() is None, f"server for {base} exited with {process.returncode}"
        try:
            if (await http.get(f"{base}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server at {base} never became ready"
        await asyncio.sleep(0.05)


async def test_two_server_processes_share_one_budget(backend: Backend, prefix: str) -> None:
    """Concurrent clients spread over two uvicorn processes: one key's allowed count in the window
    is between the limit and 5% above it."""
    limit, window = 100, 60
    servers = [_serve(backend, prefix, limit, window) for _ in range(2)]
    try:
        async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=40)) as http:
            for process, base in servers:
                await _wait_ready(http, process, base)
            bases = [base for _, base in servers]
            statuses: list[int] = []

            async def client(n: int) -> None:
                for i in range(15):
                    response = await http.get(f"{bases[(n + i) % 2]}/v1/charges", headers=AUTH)
                    statuses.append(response.status_code)

            await asyncio.gather(*(client(n) for n in range(20)))
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            process.wait(timeout=10)
    assert set(statuses) <= {200, 429}
    assert len(statuses) == 300
    allowed = statuses.count(200)
    assert limit <= allowed <= limit * 1.05, f"{allowed} allowed against a limit of {limit}"


async def test_one_round_trip_decides_each_key_on_its_own(backend: Backend, prefix: str) -> None:
    """``hit_many`` (the middleware's IP and key decisions in one EVALSHA on a standalone Redis, one
    call each on a cluster) spends and refuses each key independently, on the same counters as ``hit``."""
    limiter = RedisLimiter(backend.client, prefix=prefix)
    rounds = [await limiter.hit_many([("ip", 5, 60, 1), ("key", 3, 60, 1)]) for _ in range(4)]
    assert [[d.allowed for d in decisions] for decisions in rounds] == [
        [True, True],
        [True, True],
        [True, True],
        [True, False],  # the key's budget is spent; the IP's hit still counts
    ]
    assert [decisions[0].remaining for decisions in rounds] == [4, 3, 2, 1]
    assert rounds[3][1].retry_after > 0
    assert rounds[3][1].limit == 3
    # The same counters as single decisions: one unit of the IP's budget is left.
    assert (await limiter.hit("ip", 5, 60)).remaining == 0
    assert not (await limiter.hit("ip", 5, 60)).allowed
