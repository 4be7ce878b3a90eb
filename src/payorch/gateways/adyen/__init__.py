"""Adyen gateway (Checkout API v71 over httpx), the backup processor."""

from __future__ import annotations

from payorch.gateways.adyen.config import AdyenConfig
from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.plugin import GatewayPlugin, GatewayServices


def _build(config: AdyenConfig, services: GatewayServices) -> Gateway:
    del services  # Adyen keeps its own books
    from payorch.gateways.adyen.adapter import AdyenGateway

    return AdyenGateway(config)


PLUGIN = GatewayPlugin(
    kind="adyen",
    title="Adyen",
    config=AdyenConfig,
    capabilities=Capabilities(
        authorize=True,
        partial_capture=True,
        void=True,
        refund=True,
        vault=True,
        lookup=True,
        notifications=True,
        verify_credentials=True,
        customer_authentication=True,
    ),
    build=_build,
    notification_scheme="Adyen HMAC",
)
