"""Adyen gateway adapter (Checkout API v71 over httpx), the backup processor."""

from payorch.gateways.adyen.adapter import AdyenGateway

__all__ = ["AdyenGateway"]
