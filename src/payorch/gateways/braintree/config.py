"""A Braintree merchant's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from payorch.gateways.config import GatewayConfig, timeout_ms_field


class BraintreeConfig(GatewayConfig):
    """Braintree (its official SDK, run in worker threads)."""

    kind: Literal["braintree"] = "braintree"
    timeout_ms: int = timeout_ms_field(default=5000)
    merchant_account: str = Field(min_length=1)
    """The Braintree merchant id."""
    public_key: str = Field(min_length=1)
    private_key: SecretStr = Field(min_length=1)
    """Authenticates every call and verifies Braintree's notifications (``bt_signature``)."""
    environment: str = "sandbox"
    """``sandbox`` or ``production`` (ignored when ``base_url`` is set)."""
    base_url: str | None = None
    """``http(s)://host[:port]`` of another gateway host (a local emulator); https only on port 443."""
    three_d_secure_required: bool = False
    """Send ``three_d_secure: {required: true}``: a customer-present sale whose nonce carries no
    3-D Secure result from the client is rejected (``authentication_required``)."""
