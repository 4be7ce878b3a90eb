"""Braintree gateway (official SDK) and its pure wire mapping. The SDK is imported only when one is built."""

from __future__ import annotations

from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.braintree.config import BraintreeConfig
from payorch.gateways.plugin import GatewayPlugin, GatewayServices


def _build(config: BraintreeConfig, services: GatewayServices) -> Gateway:
    del services  # Braintree keeps its own books
    from payorch.gateways.braintree.adapter import BraintreeAdapter

    return BraintreeAdapter(config)


PLUGIN = GatewayPlugin(
    kind="braintree",
    title="Braintree",
    config=BraintreeConfig,
    capabilities=Capabilities(
        authorize=True,
        partial_capture=True,
        void=True,
        refund=True,
        vault=True,
        lookup=True,
        notifications=True,
        verify_credentials=True,
    ),
    build=_build,
    notification_scheme="Braintree bt_signature",
)
