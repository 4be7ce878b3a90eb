"""Audit shipping throughput beside charge throughput (docs/benchmarks.md, "Audit shipping (issue 5)").

    .venv/bin/python bench/audit_bench.py [--charges 500] [--concurrency 10]

Creates (and drops) its own database on the local Postgres (``PAYORCH_BENCH_SERVER_URL``, default
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres), then:
1. charges/s through the real app (ASGI, sandbox gateway) with the shipper stopped;
2. events/s the shipper chains and ships to a local directory sink, from the backlog step 1 left;
3. the cost of recording a transaction's two audit events as one INSERT versus two.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import charge_body, create_merchant

from payorch.app import create_app
from payorch.audit.events import Actor, AuditEvent, Resource, record, record_many
from payorch.audit.shipper import AuditShipper
from payorch.audit.sinks import LocalDirectorySink
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage.bootstrap import run_migrations

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


async def admin(url: str, statement: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def charges_per_second(runtime: Runtime, settings: Settings, count: int, concurrency: int) -> float:
    merchant = await create_merchant(runtime)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
        started = time.perf_counter()
        for first in range(0, count, concurrency):
            batch = [
                client.post("/v1/charges", json=charge_body(amount=100 + i), headers=merchant.headers)
                for i in range(first, min(count, first + concurrency))
            ]
            for response in await asyncio.gather(*batch):
                if response.status_code != 201:
                    raise SystemExit(f"charge failed: {response.status_code} {response.text}")
        return count / (time.perf_counter() - started)


async def shipping_events_per_second(runtime: Runtime, directory: Path) -> tuple[int, float]:
    shipper = AuditShipper(runtime.db, [LocalDirectorySink(directory)], batch_size=500)
    started = time.perf_counter()
    total = 0
    while True:
        report = await shipper.run_once(force=True)
        shipped = report.shipped.get("local", 0)
        total += shipped
        if shipped == 0 and report.chained == 0:
            break
    return total, total / (time.perf_counter() - started)


async def insert_cost_ms(runtime: Runtime, rounds: int = 200) -> tuple[float, float]:
    def events() -> list[AuditEvent]:
        return [
            AuditEvent(
                actor=Actor(merchant_id="mer_bench"),
                action="charge.created",
                resource=Resource(type="charge", id="ch_b"),
            ),
            AuditEvent(
                actor=Actor(merchant_id="mer_bench"),
                action="charge.attempt.sent",
                resource=Resource(type="charge_attempt", id="att_b"),
            ),
        ]

    async def timed(batched: bool) -> float:
        samples = []
        for _ in range(rounds):
            pair = events()
            async with runtime.db.transaction() as transaction:
                started = time.perf_counter()
                if batched:
                    await record_many(transaction, pair)
                else:
                    for event in pair:
                        await record(transaction, event)
                samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)

    await timed(True)  # warm the statement caches
    return await timed(False), await timed(True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--charges", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--server", default=SERVER)
    args = parser.parse_args()
    name = f"payorch_bench_audit_{secrets.token_hex(4)}"
    await admin(args.server, f'CREATE DATABASE "{name}"')
    url = make_url(args.server).set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(run_migrations, url, partitions=16)
        settings = Settings(
            environment="development",
            database_url=url,
            api={"api_key_cache_seconds": 5},
            breaker={"enabled": False},
            ratelimit={"enabled": False},
        )
        runtime = await Runtime.build(settings, url)
        try:
            rate = await charges_per_second(runtime, settings, args.charges, args.concurrency)
            with tempfile.TemporaryDirectory() as directory:
                shipped, shipping = await shipping_events_per_second(runtime, Path(directory))
            two, one = await insert_cost_ms(runtime)
        finally:
            await runtime.aclose()
    finally:
        await admin(args.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"charges: {args.charges} at concurrency {args.concurrency}: {rate:.0f} charges/s (shipper stopped)")
    print(f"audit events per charge: {shipped / args.charges:.1f}")
    print(f"shipping to the local sink (chain + write + fsync): {shipped} events, {shipping:.0f} events/s")
    print(f"recording 2 events: two INSERTs {two:.2f} ms, one INSERT {one:.2f} ms (median)")


if __name__ == "__main__":
    asyncio.run(main())
