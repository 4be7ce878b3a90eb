"""A runtime whose dispatcher the test drives itself, round by round: for tests that need real
webhook deliveries without running the dispatcher's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
from cryptography.fernet import Fernet
from tests.conftest import make_settings
from tests.fakes.merchant_endpoint import Arrival, MerchantEndpoint

from payorch.app import create_app
from payorch.runtime import Runtime


@contextlib.asynccontextmanager
async def webhook_runtime(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """Its own runtime (webhook key set, 3 s delivery timeout) and a client of its app."""
    webhooks = {"secret_key": Fernet.generate_key().decode(), "delivery_timeout_seconds": 3}
    settings = make_settings(database_url, webhooks=webhooks)
    runtime = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
            yield runtime, client
    finally:
        await runtime.aclose()


async def deliver_until(runtime: Runtime, endpoint: MerchantEndpoint, arrived: Callable[[Arrival], bool]) -> None:
    """Run dispatch rounds until the endpoint acknowledged a delivery ``arrived`` accepts (with a
    deadline, not a sleep)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not any(arrived(arrival) for arrival in endpoint.acknowledged()):
        assert asyncio.get_running_loop().time() < deadline, endpoint.arrivals
        await runtime.webhooks.dispatcher.run_once()
