"""Builds the configured gateways once, in order, at start."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from payorch.gateways.base import Gateway
from payorch.settings import GatewayConfig
from payorch.storage.engine import SessionFactory
from payorch.storage.sandbox import SandboxLedger


@dataclass(frozen=True, slots=True)
class Configured:
    config: GatewayConfig
    gateway: Gateway

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def timeout(self) -> float:
        return self.config.timeout


class GatewayRegistry:
    """The ordered gateways, by name."""

    def __init__(self, gateways: list[Configured]) -> None:
        self._ordered = gateways
        self._by_name = {g.name: g for g in gateways}

    def __iter__(self) -> Iterator[Configured]:
        return iter(self._ordered)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Configured | None:
        return self._by_name.get(name)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self._ordered]

    async def aclose(self) -> None:
        for configured in self._ordered:
            await configured.gateway.aclose()


def build_gateway(config: GatewayConfig, sessions: SessionFactory) -> Gateway:
    if config.kind == "sandbox":
        from payorch.gateways.sandbox import SandboxGateway

        return SandboxGateway(config.name, SandboxLedger(sessions), timeout=config.timeout)
    raise ValueError(f"gateway kind {config.kind!r} is not available in this build")


def build_registry(configs: list[GatewayConfig], sessions: SessionFactory) -> GatewayRegistry:
    return GatewayRegistry([Configured(config, build_gateway(config, sessions)) for config in configs])
