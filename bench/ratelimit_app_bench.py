"""The rate limiter's cost per request through the real payorch app (issue 4's figure).

    .venv/bin/python bench/ratelimit_app_bench.py [--requests 400] [--concurrency 16] [--rounds 3]

Builds the real Runtime and app three times on one freshly migrated database (127.0.0.1:5432, or
PAYORCH_BENCH_DATABASE_URL): limiting off, the in-process limiter (embedded mode), and the Redis
limiter (PAYORCH_BENCH_REDIS_URL, default redis://127.0.0.1:6379/0). Each request is an
authenticated ``GET /v1/charges/{id}`` (API key cache on, one indexed read) through
``httpx.ASGITransport``, so the figures are the app's own cost without a network stack. Variants
are interleaved round by round in the same run; p50 is one client in sequence, throughput is
``--concurrency`` clients on one event loop. Limits are set high enough that nothing is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from payorch.app import create_app
from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.security.api_keys import create_key
from payorch.settings import Settings
from payorch.storage import merchants as merchants_repo
from payorch.storage.bootstrap import run_migrations

HIGH = {"requests": 1_000_000, "window_seconds": 60}


def _settings(url: str, variant: str, redis_url: str) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": url,
        "ratelimit": {"enabled": variant != "off", "key_limit": HIGH, "ip_limit": HIGH, "routes": {}},
    }
    if variant == "redis":
        values["redis_url"] = redis_url
    return Settings(**values)


async def _admin(server: str, statement: str) -> None:
    dsn = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _measure(url: str, variant: str, redis_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    runtime = await Runtime.build(_settings(url, variant, redis_url), url)
    try:
        async with runtime.db.transaction() as transaction:
            merchant = await merchants_repo.insert_merchant(transaction, new_id("mer"), "bench")
            key = await create_key(transaction, merchant.id, "test")
        headers = {"Authorization": f"Bearer {key.secret}"}
        transport = httpx.ASGITransport(app=create_app(runtime.settings, runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            created = await client.post(
                "/v1/charges",
                json={"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}},
                headers=headers,
            )
            path = f"/v1/charges/{created.json()['id']}"
            for _ in range(20):  # warm the key cache, the pools and the Lua script
                await client.get(path, headers=headers)
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(path, headers=headers)
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text

            async def worker(count: int) -> None:
                for _ in range(count):
                    assert (await client.get(path, headers=headers)).status_code == 200

            started = time.perf_counter()
            await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
            throughput = (requests // concurrency) * concurrency / (time.perf_counter() - started)
        return statistics.median(latencies) * 1000, throughput
    finally:
        await runtime.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("PAYORCH_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("PAYORCH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    name = f"payorch_bench_{secrets.token_hex(4)}"
    await _admin(server, f'CREATE DATABASE "{name}"')
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(run_migrations, url, partitions=16)
        results: dict[str, list[tuple[float, float]]] = {"off": [], "memory": [], "redis": []}
        for _ in range(args.rounds):
            for variant in results:
                results[variant].append(await _measure(url, variant, redis_url, args.requests, args.concurrency))
    finally:
        await _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    labels = {"off": "limiter off", "memory": "in-process limiter", "redis": "Redis limiter"}
    print(f"| variant | p50 ms (median of {args.rounds} rounds) | req/s ({args.concurrency} clients) |")
    print("|---|---|---|")
    for variant, runs in results.items():
        p50 = statistics.median(r[0] for r in runs)
        rps = statistics.median(r[1] for r in runs)
        print(f"| {labels[variant]} | {p50:.2f} | {rps:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
