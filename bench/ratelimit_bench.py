"""What the rate limiter costs per request, measured in one run against the same tiny ASGI app:
no limiter, in-process limiter, Redis limiter (through FallbackLimiter, as deployed).

    PYTHONPATH=src python bench/ratelimit_bench.py [--redis redis://127.0.0.1:6379/0] [--requests 20000]

The app is called directly as ASGI (no HTTP server, no sockets on the client side), so the
differences are the middleware and the Redis round trips, not uvicorn or httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.ratelimit import RateLimitConfig, RateLimitMiddleware, build_limiter


async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:  # noqa: ARG001
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


async def one_request(app: ASGIApp, token: bytes, peer: str) -> int:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/v1/charges/ch_1",
        "raw_path": b"/v1/charges/ch_1",
        "query_string": b"",
        "headers": [(b"authorization", b"Bearer " + token)],
        "client": (peer, 40000),
        "server": ("127.0.0.1", 8000),
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: ASGIApp, requests: int, concurrency: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, requests per second). 1000 keys and 100 IPs so nothing is refused."""
    latencies: list[float] = []
    per_worker = requests // concurrency

    async def worker(n: int) -> None:
        for i in range(per_worker):
            token = f"sk_test_{(n * per_worker + i) % 1000}".encode()
            started = time.perf_counter()
            await one_request(app, token, f"198.51.100.{i % 100}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return quantiles[49] * 1000, quantiles[98] * 1000, len(latencies) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    config = RateLimitConfig(
        key_limit={"requests": 1_000_000, "window_seconds": 60},
        ip_limit={"requests": 1_000_000, "window_seconds": 60},
        redis_timeout_ms=1000,
    )
    redis = Redis.from_url(args.redis)
    prefix = f"rlbench-{uuid.uuid4().hex[:8]}"
    variants: list[tuple[str, ASGIApp]] = [
        ("no limiter", endpoint),
        ("in-process limiter", RateLimitMiddleware(endpoint, build_limiter(config, None), config)),
        ("Redis limiter", RateLimitMiddleware(endpoint, build_limiter(config, redis, prefix=prefix), config)),
    ]
    print(f"{args.requests} requests per variant; p50/p99 with one client, throughput with {args.concurrency}")
    print(f"{'variant':<20} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9}")
    for name, app in variants:
        await measure(app, min(2000, args.requests), args.concurrency)  # warm up: connections, script cache
        p50, p99, _ = await measure(app, args.requests // 4, 1)
        _, _, rate = await measure(app, args.requests, args.concurrency)
        print(f"{name:<20} {p50:>8.3f} {p99:>8.3f} {rate:>9.0f}")
    keys = [key async for key in redis.scan_iter(match=f"{{{prefix}:*")]
    for start in range(0, len(keys), 500):
        await redis.delete(*keys[start : start + 500])
    await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
