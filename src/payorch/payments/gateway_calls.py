"""Calling a charge's own gateway for follow-up operations (capture, void, refund, vault): one call,
raced against the gateway's timeout, never raising. Failover never applies: the money is at the
gateway that holds the charge."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from payorch.gateways.base import GatewayResult, Outcome, VaultResult

log = logging.getLogger("payorch.gateway_calls")

R = TypeVar("R", GatewayResult, VaultResult)


async def bounded(call: Awaitable[R], seconds: float, unknown: R) -> R:
    """``call``'s answer, or ``unknown`` if it did not answer in ``seconds`` or raised (an
    adapter must not raise; if one does, the operation may have happened)."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        return unknown
    except Exception:
        log.exception("gateway call raised")
        return unknown


def unknown_result(code: str = "timeout") -> GatewayResult:
    return GatewayResult(Outcome.UNKNOWN, code=code, message="No answer from the gateway before the timeout.")
