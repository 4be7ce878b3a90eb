"""Builds the configured gateways once, in order, at start."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from payorch.gateways.base import Gateway
from payorch.settings import GatewayConfig
from payorch.storage.database import Database
from payorch.storage.sandbox import SandboxLedger

ADAPTER_MARGIN_SECONDS = 0.75
"""How much longer than its own timeout a gateway call is raced (at least; 10% for long timeouts).

Every adapter sets its HTTP client's timeout to the gateway's timeout. Racing the call for exactly
that long would let the race win ties and report a bare ``timeout`` where the adapter would have
told a refused connection (not sent, safe to fail over) from a read timeout (unknown). The margin
covers the Braintree adapter's worker-thread grace (0.5 s) and scheduling jitter; the race still
bounds an answer that keeps trickling in, which a per-read HTTP timeout alone never would."""


def race_timeout(timeout: float) -> float:
    """Seconds a call to a gateway whose own timeout is ``timeout`` is raced by the executor."""
    return timeout + max(ADAPTER_MARGIN_SECONDS, timeout * 0.1)


@dataclass(frozen=True, slots=True)
class Configured:
    config: GatewayConfig
    gateway: Gateway

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def timeout(self) -> float:
        """The adapter's own timeout (seconds)."""
        return self.config.timeout

    @property
    def race_timeout(self) -> float:
        """How long the executor and reconciler wait for a call: the adapter's timeout fires first."""
        return race_timeout(self.config.timeout)


class GatewayRegistry:
    """The ordered gateways, by name."""

    def __init__(self, gateways: list[Configured]) -> None:
        self._ordered = gateways
        self._by_name = {g.name: g for g in gateways}

    def __iter__(self) -> Iterator[Configured]:
        return iter(self._ordered)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Configured | None:
        return self._by_name.get(name)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self._ordered]

    async def aclose(self) -> None:
        for configured in self._ordered:
            await configured.gateway.aclose()


def build_gateway(config: GatewayConfig, db: Database) -> Gateway:
    """The adapter for one configured gateway.

    Each adapter sets its own HTTP timeout to ``config.timeout``; the executor races the call a
    little longer (:func:`race_timeout`) so the adapter's timeout fires first and the adapter
    classifies the failure itself (a connect timeout is not sent, a read timeout is unknown).
    SDKs are imported here, not at module import, so a build without a gateway never loads its SDK.
    """
    match config.kind:
        case "sandbox":
            from payorch.gateways.sandbox import SandboxGateway

            # The sandbox has no HTTP client of its own to time out: its simulated hang must outlast
            # the executor's race, so it is given the race's length as "the timeout" it hangs past.
            return SandboxGateway(config.name, SandboxLedger(db), timeout=race_timeout(config.timeout))
        case "stripe":
            from payorch.gateways.stripe import StripeGateway

            return StripeGateway(
                config, webhook_secret=config.webhook_secret, webhook_tolerance=config.webhook_tolerance_seconds
            )
        case "braintree":
            from payorch.gateways.braintree import BraintreeAdapter

            return BraintreeAdapter(config)
        case "adyen":
            from payorch.gateways.adyen import AdyenGateway

            return AdyenGateway(config, hmac_key=config.webhook_secret)
    raise ValueError(f"gateway kind {config.kind!r} is not available in this build")


def build_registry(configs: list[GatewayConfig], db: Database) -> GatewayRegistry:
    return GatewayRegistry([Configured(config, build_gateway(config, db)) for config in configs])
