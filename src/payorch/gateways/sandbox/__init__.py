"""The sandbox processor: a simulated gateway for the embedded mode, tests and benchmarks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from payorch.gateways.base import Capabilities, Gateway
from payorch.gateways.plugin import GatewayPages, GatewayPlugin, GatewayServices
from payorch.gateways.sandbox.config import SandboxConfig


def _build(config: SandboxConfig, services: GatewayServices) -> Gateway:
    from payorch.gateways.sandbox.adapter import SandboxGateway

    if services.processor_books is None:
        raise ValueError(f"gateway {config.name}: the sandbox needs its books (GatewayServices.processor_books)")
    # The sandbox has no HTTP client of its own to time out: its simulated hang must outlast the
    # executor's race, so it is given the race's length as "the timeout" it hangs past.
    return SandboxGateway(
        config.name,
        services.processor_books,
        timeout=config.race_timeout,
        approval_rate=config.approval_rate,
        public_url=config.public_url,
    )


def _pages(services: Callable[[], GatewayServices]) -> Any:
    from payorch.gateways.sandbox.page import build_pages

    return build_pages(services)


PLUGIN = GatewayPlugin(
    kind="sandbox",
    title="Sandbox",
    config=SandboxConfig,
    capabilities=Capabilities(
        authorize=True,
        partial_capture=True,
        void=True,
        refund=True,
        vault=True,
        lookup=True,
        customer_authentication=True,
        verify_credentials=True,
    ),
    build=_build,
    embedded_names=("sandbox", "sandbox_backup"),
    pages=GatewayPages(prefix="/sandbox", build=_pages),
)
