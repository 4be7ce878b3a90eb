"""Stripe gateway adapter (official SDK, PaymentIntents)."""

from payorch.gateways.stripe.adapter import StripeGateway

__all__ = ["StripeGateway"]
