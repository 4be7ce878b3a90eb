"""The outermost ASGI layer: gives each request its id, binds the log context, counts the answer.

It runs before the rate limiter, so a 429 carries the same ``Request-Id`` its error body names and
its log line does too; the request id lives in ``scope["state"]["request_id"]``, where the rate
limiter and ``RequestContextMiddleware`` find it. Metrics are labelled by route template
(``/v1/charges/{charge_id}``), never by raw path.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.ids import new_id
from payorch.observability.logging import bind_request, clear_request
from payorch.observability.metrics import Metrics

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def route_template(scope: Scope) -> str:
    """The path template the request matched (or would have, had nothing refused it first)."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    if app is None:
        return "unmatched"
    for pattern, template in _templates(app):
        if pattern.match(scope["path"]):
            return template
    return "unmatched"


def _templates(app: Any) -> list[tuple[re.Pattern[str], str]]:
    """The app's documented path templates as patterns, literal ones first (built once per app)."""
    cached: list[tuple[re.Pattern[str], str]] | None = getattr(app.state, "route_templates", None)
    if cached is not None:
        return cached
    try:
        paths = list(app.openapi().get("paths", {}))
    except Exception:
        log.exception("reading the app's routes for metrics failed")
        paths = []
    paths.sort(key=lambda template: (template.count("{"), -len(template)))
    cached = [(re.compile("^" + re.sub(r"\\{[^/]*?\\}", "[^/]+", re.escape(t)) + "/?$"), t) for t in paths]
    app.state.route_templates = cached
    return cached


def _metrics(scope: Scope) -> Metrics | None:
    runtime = getattr(getattr(scope.get("app"), "state", None), "runtime", None)
    metrics = getattr(runtime, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


class ObservedRequestMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        bind_request(request_id)
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)["Request-Id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self._observe(scope, status, time.perf_counter() - started)
            clear_request()

    @staticmethod
    def _observe(scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        route = route_template(scope)
        metrics = _metrics(scope)
        if metrics is not None:
            metrics.http_request(method, route, status, seconds)
        if scope["path"] not in _QUIET_PATHS:
            log.info(
                "%s %s %d %.1fms",
                method,
                route,
                status,
                seconds * 1000,
                extra={"method": method, "route": route, "status": status},
            )
