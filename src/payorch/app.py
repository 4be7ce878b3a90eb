"""create_app(settings): the lifespan builds a Runtime, mounts routers and error handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware

from payorch import __version__
from payorch.api import (
    bank_links,
    charges,
    gateway_accounts,
    gateway_webhooks,
    health,
    payment_methods,
    refunds,
    webhook_endpoints,
)
from payorch.api.errors import install_error_handlers
from payorch.api.middleware import RequestContextMiddleware
from payorch.api.openapi import install_openapi
from payorch.api.ops import OpsListener
from payorch.api.ratelimit import RuntimeRateLimitMiddleware
from payorch.api.strict_query import reject_unknown_query
from payorch.dashboard.app import build_dashboard
from payorch.dashboard.web import PREFIX as DASHBOARD_PREFIX
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import gateway_pages
from payorch.observability.http import ObservedRequestMiddleware
from payorch.runtime import Runtime
from payorch.settings import Settings

DESCRIPTION = """\
payorch routes each charge through an ordered list of payment gateways, each raced against its own
timeout, failing over only where that can never charge a customer twice.

Amounts are integers in the currency's minor unit. Authenticate with `Authorization: Bearer sk_test_...`.
Every response carries `Request-Id`. Errors are `{"error": {"type", "code", "message", ...}}`.
"""


def create_app(settings: Settings, *, database_url: str | None = None, runtime: Runtime | None = None) -> FastAPI:
    """The ASGI app. Give it a built ``runtime`` (tests), or a ``database_url`` for the lifespan to use."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            app.state.runtime = runtime
            yield
            return
        url = database_url or (settings.database_url.get_secret_value() if settings.database_url else None)
        if url is None:
            raise RuntimeError("no database URL: `payorch serve` starts the embedded server and passes one")
        built = await Runtime.build(settings, url)
        listener = OpsListener.for_settings(settings, built)
        if listener is not None:
            try:
                await listener.start()  # before any background work: a port in use fails the start
            except BaseException:
                await built.aclose()
                raise
        if settings.background_in_api:
            built.start_background()
        app.state.runtime = built
        # Everything alive now (modules, the SDKs, the app, the runtime: ~150,000 objects) lives as
        # long as the process: keep it out of the cyclic collector, whose full passes over it took
        # ~80 ms each, a pause for every request in flight (docs/benchmarks.md).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()  # a process that serves again (tests, the embedded mode) starts afresh
            if listener is not None:
                await listener.stop()
            await built.aclose()

    app = FastAPI(
        title="payorch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    if runtime is not None:
        app.state.runtime = runtime
    app.include_router(health.router)
    if settings.metrics_on_api_port:
        app.include_router(health.metrics_router)
    app.include_router(charges.router)
    app.include_router(refunds.router)
    app.include_router(payment_methods.router)
    app.include_router(webhook_endpoints.router)
    app.include_router(gateway_webhooks.router)
    app.include_router(bank_links.router)
    app.include_router(gateway_accounts.accounts_router)
    app.include_router(gateway_accounts.routing_router)
    # Mounted, not included: none of its routes is in the public API's OpenAPI document.
    dashboard = build_dashboard(settings, lambda: app.state.runtime)
    if dashboard is not None:
        app.mount(DASHBOARD_PREFIX, dashboard)

    def gateway_services() -> GatewayServices:
        built: Runtime = app.state.runtime
        return built.gateway_services

    for pages in gateway_pages(settings.gateways):
        app.mount(pages.prefix, pages.build(gateway_services))
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.api.max_body_bytes,
        max_json_depth=settings.api.max_json_depth,
        body_timeout_seconds=settings.api.body_timeout_seconds,
    )
    # Rate limiting wraps the request guard (no body is read for a refused request) and everything
    # after it, idempotency included: a replayed idempotent request still counts.
    app.add_middleware(RuntimeRateLimitMiddleware, config=settings.ratelimit)
    if settings.api.cors_allowed_origins:
        # Wraps the request guard: a preflight is answered before any body is read.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_allowed_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Request-Id", "RateLimit", "RateLimit-Policy", "Retry-After", "Idempotent-Replayed"],
            max_age=600,
        )
    # Outermost: the request id (which a 429 names too), the log context, HTTP metrics.
    app.add_middleware(ObservedRequestMiddleware)
    return app


def app_from_environment() -> FastAPI:
    """The app of one ``payorch serve --workers N`` worker process: settings from the environment."""
    from payorch.observability.logging import configure_logging

    settings = Settings()
    configure_logging(json_lines=settings.json_logs)
    return create_app(settings)
