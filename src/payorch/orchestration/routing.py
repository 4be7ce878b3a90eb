"""Which gateways may take a charge, in which order (DESIGN.md section 5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from payorch.gateways.registry import Configured, GatewayRegistry
from payorch.orchestration.config import RoutingConfig


@dataclass(frozen=True, slots=True)
class Candidate:
    configured: Configured
    token: str

    @property
    def name(self) -> str:
        return self.configured.name


class Router:
    def __init__(self, registry: GatewayRegistry, config: RoutingConfig) -> None:
        self._registry = registry
        self._config = config

    def unknown_gateways(self, tokens: Mapping[str, str]) -> list[str]:
        return sorted(name for name in tokens if name not in self._registry)

    def candidates(self, currency: str, tokens: Mapping[str, str]) -> list[Candidate]:
        """The configured order (per currency if set) filtered to gateways holding a token."""
        order = self._config.order_by_currency.get(currency.upper()) or self._config.order_by_currency.get(currency)
        names = order if order else self._registry.names
        result = []
        for name in names:
            configured = self._registry.get(name)
            token = tokens.get(name)
            if configured is not None and token:
                result.append(Candidate(configured, token))
        return result
