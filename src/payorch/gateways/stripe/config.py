"""A Stripe account's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from payorch.gateways.config import GatewayConfig, timeout_ms_field


class StripeConfig(GatewayConfig):
    """Stripe (PaymentIntents through the official SDK)."""

    kind: Literal["stripe"] = "stripe"
    timeout_ms: int = timeout_ms_field(default=3000)
    api_key: SecretStr = Field(min_length=1)
    """The account's secret key (``sk_live_...`` / ``sk_test_...``)."""
    base_url: str | None = None
    """Another API host (a local emulator); unset: Stripe's own."""
    webhook_secret: SecretStr | None = None
    """The endpoint's signing secret (``whsec_...``) that verifies Stripe's notifications. Unset:
    its notifications are refused."""
    webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)
    """How old a signed timestamp may be (Stripe's replay protection)."""
    request_three_d_secure: Literal["automatic", "any", "challenge"] = "automatic"
    """``payment_method_options[card][request_three_d_secure]``: ``automatic`` lets Stripe (and the
    issuer) decide; ``any`` asks for 3-D Secure whenever the card supports it; ``challenge`` always
    asks for a challenge."""
