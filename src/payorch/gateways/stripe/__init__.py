"""Stripe gateway (official SDK, PaymentIntents). The SDK is imported only when one is built."""

from __future__ import annotations

from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.plugin import GatewayPlugin, GatewayServices
from payorch.gateways.stripe.config import StripeConfig


def _build(config: StripeConfig, services: GatewayServices) -> Gateway:
    del services  # Stripe keeps its own books
    from payorch.gateways.stripe.adapter import StripeGateway

    return StripeGateway(config)


PLUGIN = GatewayPlugin(
    kind="stripe",
    title="Stripe",
    config=StripeConfig,
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
    notification_scheme="Stripe-Signature with timestamp tolerance",
)
