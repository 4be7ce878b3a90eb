"""What a gateway package registers: its :class:`GatewayPlugin`, listed in ``gateways/registry.py``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.config import GatewayConfig

if TYPE_CHECKING:
    from payorch.gateways.sandbox.books import SandboxBooks

ConfigT = TypeVar("ConfigT", bound=GatewayConfig)


@dataclass(frozen=True, slots=True)
class GatewayServices:
    """What the runtime hands every plugin's build function: things a package may use but not make."""

    processor_books: SandboxBooks | None = None
    """The books a simulated processor keeps (storage implements them; the runtime passes them in)."""


@dataclass(frozen=True, slots=True)
class GatewayPages:
    """Pages a gateway package serves to customers' browsers (the sandbox's authentication page),
    mounted by the app at ``prefix`` when a gateway of that kind is configured."""

    prefix: str
    build: Callable[[Callable[[], GatewayServices]], Any]
    """Makes the ASGI app; its argument gives the runtime's services (built after the app)."""


@dataclass(frozen=True, slots=True)
class GatewayPlugin(Generic[ConfigT]):
    """One gateway package, as the registry and the settings see it."""

    kind: str
    """The ``kind`` of its config objects."""
    title: str
    """The gateway's name for people (OpenAPI text, docs)."""
    config: type[ConfigT]
    capabilities: Capabilities
    build: Callable[[ConfigT, GatewayServices], Gateway]
    """Makes the adapter; imports the SDK or adapter module only when called."""
    notification_scheme: str | None = None
    """How its inbound notifications are verified, for people; None when it sends none."""
    embedded_names: tuple[str, ...] = ()
    """Names under which it is configured when nothing is (the embedded mode)."""
    pages: GatewayPages | None = None
    """Pages it serves to customers' browsers; None when it serves none."""
