"""The sandbox's settings: a name and a timeout; it has no credentials."""

from __future__ import annotations

from typing import Literal

from payorch.gateways.config import GatewayConfig, timeout_ms_field


class SandboxConfig(GatewayConfig):
    """A simulated processor (DESIGN.md section 5)."""

    kind: Literal["sandbox"] = "sandbox"
    timeout_ms: int = timeout_ms_field(default=2000)
