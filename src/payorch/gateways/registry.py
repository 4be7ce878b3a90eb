"""The gateway packages payorch knows (one line each), and the configured gateways built from them.

Adding a gateway is one package under ``gateways/`` and one line in :data:`PLUGINS`
(docs/adding_a_gateway.md). Nothing else names a gateway: the settings' gateway list is the union of
the plugins' config models, and adapters are built by the plugin of each config's ``kind``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field

from payorch.gateways import adyen, braintree, sandbox, stripe
from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.config import GatewayConfig
from payorch.gateways.plugin import GatewayPages, GatewayPlugin, GatewayServices

PLUGINS: Final[tuple[GatewayPlugin[Any], ...]] = (
    sandbox.PLUGIN,
    stripe.PLUGIN,
    braintree.PLUGIN,
    adyen.PLUGIN,
)
"""In this order in generated text (OpenAPI, settings docs)."""

_BY_KIND: Final = {plugin.kind: plugin for plugin in PLUGINS}

# One gateway's settings: the config model of the plugin its ``kind`` names. Type checkers see the
# shared base; pydantic validates against the union (an unknown kind is refused with the known ones).
if TYPE_CHECKING:
    AnyGatewayConfig = GatewayConfig
else:
    AnyGatewayConfig = Annotated[
        functools.reduce(operator.or_, (plugin.config for plugin in PLUGINS)), Field(discriminator="kind")
    ]


def plugin_for(kind: str) -> GatewayPlugin[Any]:
    """The plugin of a config's ``kind``; a kind no plugin has is refused when settings load."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(f"gateway kind {kind!r} is not available in this build") from None


def embedded_gateways() -> list[GatewayConfig]:
    """What runs when no gateway is configured: the plugins' embedded configurations, in order."""
    return [plugin.config(name=name) for plugin in PLUGINS for name in plugin.embedded_names]


def gateway_pages(configs: list[GatewayConfig]) -> list[GatewayPages]:
    """The pages the configured kinds serve to customers' browsers (the app mounts them)."""
    kinds = {config.kind for config in configs}
    return [plugin.pages for plugin in PLUGINS if plugin.pages is not None and plugin.kind in kinds]


def notifying_plugins() -> list[GatewayPlugin[Any]]:
    """The plugins whose gateways send verifiable notifications, in registry order."""
    return [plugin for plugin in PLUGINS if plugin.capabilities.notifications]


@dataclass(frozen=True, slots=True)
class Configured:
    config: GatewayConfig
    gateway: Gateway
    metrics_label: str | None = None
    """What metrics call it; unset: its name. A merchant's own accounts are labelled by kind, so a
    label's values stay few however many accounts merchants connect."""

    @property
    def label(self) -> str:
        return self.metrics_label or self.config.name

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def timeout(self) -> float:
        """The adapter's own timeout (seconds)."""
        return self.config.timeout

    @property
    def race_timeout(self) -> float:
        """How long the executor and reconciler wait for a call: the adapter's timeout fires first."""
        return self.config.race_timeout

    @property
    def capabilities(self) -> Capabilities:
        """What this gateway's package implements."""
        return plugin_for(self.config.kind).capabilities


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


def build_gateway(config: GatewayConfig, services: GatewayServices) -> Gateway:
    """The adapter for one configured gateway, made by the plugin of its ``kind``.

    Each adapter sets its own HTTP timeout to ``config.timeout``; the executor races the call a
    little longer (``config.race_timeout``) so the adapter's timeout fires first and the adapter
    classifies the failure itself (a connect timeout is not sent, a read timeout is unknown).
    """
    return plugin_for(config.kind).build(config, services)


def build_registry(configs: list[GatewayConfig], services: GatewayServices) -> GatewayRegistry:
    return GatewayRegistry([Configured(config, build_gateway(config, services)) for config in configs])
