"""An Adyen merchant account's settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from payorch.gateways.config import GatewayConfig, timeout_ms_field


class AdyenConfig(GatewayConfig):
    """Adyen (Checkout API v71 over httpx), the backup processor."""

    kind: Literal["adyen"] = "adyen"
    timeout_ms: int = timeout_ms_field(default=8000)
    api_key: SecretStr = Field(min_length=1)
    """The web service user's API key (``X-API-Key``)."""
    merchant_account: str = Field(min_length=1)
    """The merchant account payments are made on."""
    environment: str = "sandbox"
    """``sandbox`` or ``test`` use Adyen's test endpoint; anything else is live and needs ``base_url``."""
    base_url: str | None = None
    """The Checkout endpoint (a live account's own prefix, or a local emulator), ending in ``/v71``."""
    webhook_secret: SecretStr | None = None
    """The HMAC key (hex) that verifies Adyen's notifications. Unset: its notifications are refused."""
