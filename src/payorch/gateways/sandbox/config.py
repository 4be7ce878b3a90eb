"""The sandbox's settings: a name and a timeout; it has no credentials."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from payorch.gateways.config import GatewayConfig, timeout_ms_field

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"
"""``payorch serve``'s own address when nothing else is said."""


class SandboxConfig(GatewayConfig):
    """A simulated processor (DESIGN.md section 5)."""

    kind: Literal["sandbox"] = "sandbox"
    timeout_ms: int = timeout_ms_field(default=2000)
    approval_rate: float = Field(default=1.0, ge=0, le=1)
    """The share of approving test cards it approves; the others are soft-declined
    (``issuer_unavailable``), as a struggling processor would (simulations of ``success_rate``
    routing). Drawn from the attempt id, so a retried attempt gets the same answer."""
    public_url: str = Field(default=DEFAULT_PUBLIC_URL, pattern=r"^https?://[^\s/]+(/[^\s]*)?$")
    """Where customers' browsers reach payorch: the sandbox's authentication page
    (``/sandbox/authenticate/{id}``) is sent to them under it."""
