"""Real webhook deliveries without the dispatcher's loop: the test drives it round by round.

``webhook_runtime`` is the webhook tests' own runtime (tests/integration/test_webhook_delivery.py:
a webhook key, short timeouts, and whatever else those tests need to reach a loopback endpoint)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.fakes.merchant_endpoint import Arrival, MerchantEndpoint
from tests.integration.test_webhook_delivery import _webhook_runtime as webhook_runtime

from payorch.runtime import Runtime

__all__ = ["deliver_until", "webhook_runtime"]


async def deliver_until(runtime: Runtime, endpoint: MerchantEndpoint, arrived: Callable[[Arrival], bool]) -> None:
    """Run dispatch rounds until the endpoint acknowledged a delivery ``arrived`` accepts (with a
    deadline, not a sleep)."""
    deadline = asyncio.get_running_loop().time() + 30
    while not any(arrived(arrival) for arrival in endpoint.acknowledged()):
        assert asyncio.get_running_loop().time() < deadline, endpoint.arrivals
        await runtime.webhooks.dispatcher.run_once()
