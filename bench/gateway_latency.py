"""Charge latency through the real app with the primary gateway healthy, hanging before its breaker
opens, and hanging after it opened (docs/benchmarks.md, "Gateway latency and failover (issue 3)").

Everything runs in this one process: the ASGI app (over httpx's ASGITransport, no sockets between
client and app), the real Stripe and Braintree adapters, and the protocol-level Stripe and Braintree
fakes from tests/fakes on local sockets. Postgres is real: a fresh database is created, migrated and
dropped. Gateway timeouts and breaker settings are payorch's defaults (stripe 3000 ms, braintree
5000 ms; breaker: 30 s window, 10 calls minimum, 50% failures, 15 s open, 3 probes).

    .venv/bin/python bench/gateway_latency.py [--server postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.factories import create_merchant
from tests.fakes.braintree_server import BraintreeFake
from tests.fakes.stripe_server import Fault, StripeFake

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage.bootstrap import run_migrations

BODY = {
    "amount": 1999,
    "currency": "usd",
    "payment_method": {"tokens": {"stripe": "tok_visa", "braintree": "fake-valid-nonce"}},
}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def _timed(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    response = await client.post("/v1/charges", json=BODY, headers=headers)
    elapsed = time.perf_counter() - started
    payload = response.json()
    return elapsed * 1000, response.status_code, str(payload.get("gateway") or payload.get("status"))


async def _sequential(client: httpx.AsyncClient, headers: dict[str, str], count: int) -> list[tuple[float, int, str]]:
    return [await _timed(client, headers) for _ in range(count)]


def _row(name: str, samples: list[tuple[float, int, str]]) -> str:
    latencies = [s[0] for s in samples]
    answers = sorted({f"{code} {where}" for _, code, where in samples})
    return (
        f"| {name} | {len(samples)} | {statistics.median(latencies):.0f} | {_percentile(latencies, 0.99):.0f} | "
        f"{max(latencies):.0f} | {', '.join(answers)} |"
    )


async def _run(url: str, healthy: int, after_open: int) -> list[str]:
    with StripeFake() as stripe, BraintreeFake() as braintree:
        gateways: list[dict[str, Any]] = [
            {"name": "stripe", "kind": "stripe", "base_url": stripe.url, "api_key": stripe.api_key},
            {
                "name": "braintree",
                "kind": "braintree",
                "base_url": braintree.url,
                "merchant_account": braintree.merchant_id,
                "public_key": braintree.public_key,
                "private_key": braintree.private_key,
            },
        ]
        # No rate limit: the figures are for the gateway path, not for the budget of one API key.
        settings = Settings(
            environment="development", database_url=url, gateways=gateways, ratelimit={"enabled": False}
        )
        runtime = await Runtime.build(settings, url)
        try:
            merchant = await create_merchant(runtime)
            app = create_app(settings, runtime=runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:
                await _sequential(client, merchant.headers, 20)  # warm-up: pools, SDK imports
                rows = [_row("primary healthy", await _sequential(client, merchant.headers, healthy))]
                # The primary now hangs on every request carrying the card (replays included).
                stripe.inject(Fault.HANG, token="tok_visa")  # noqa: S106 - a Stripe test token
                # Waves of concurrent charges until the breaker opens: the window (30 s) still holds
                # the healthy calls at first, so it opens only once failures make half of it.
                hanging: list[tuple[float, int, str]] = []
                while runtime.breakers.states()["stripe"] == "closed":
                    wave = settings.breaker.minimum_calls
                    hanging += await asyncio.gather(*(_timed(client, merchant.headers) for _ in range(wave)))
                rows.append(_row("primary hanging, before its breaker opens", hanging))
                after = await _sequential(client, merchant.headers, after_open)
                rows.append(_row("primary hanging, after its breaker opened (half-open probes included)", after))
                rows.append(f"<!-- breaker states at the end: {runtime.breakers.states()} -->")
            stripe.clear_faults()
            stripe.release()
            return rows
        finally:
            await runtime.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--healthy", type=int, default=300)
    parser.add_argument("--after-open", type=int, default=300)
    args = parser.parse_args()
    server = make_url(args.server)
    name = f"payorch_bench_{secrets.token_hex(4)}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin, timeout=10)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(run_migrations, url, partitions=16)
        rows = await _run(url, args.healthy, args.after_open)
    finally:
        connection = await asyncpg.connect(admin, timeout=10)
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()
    header = "| scenario | charges | p50 ms | p99 ms | max ms | answers |\n|---|---|---|---|---|---|"
    sys.stdout.write("\n".join([header, *rows]) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
