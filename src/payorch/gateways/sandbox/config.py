"""The sandbox's settings: a name and a timeout; it has no credentials."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from payorch.gateways.config import GatewayConfig, timeout_ms_field


class SandboxConfig(GatewayConfig):
    """A simulated processor (DESIGN.md section 5)."""

    kind: Literal["sandbox"] = "sandbox"
    timeout_ms: int = timeout_ms_field(default=2000)
    approval_rate: float = Field(default=1.0, ge=0, le=1)
    """The share of approving test cards it approves; the others are soft-declined
    (``issuer_unavailable``), as a struggling processor would (simulations of ``success_rate``
    routing). Drawn from the attempt id, so a retried attempt gets the same answer."""
