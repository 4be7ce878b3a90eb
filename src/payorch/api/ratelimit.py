"""The rate limiter mounted on the app (DESIGN.md section 7; the limiter itself is payorch.ratelimit).

The middleware stack is fixed when the app is created, but the limiter (and the Redis client under
it) belongs to the Runtime, which the lifespan builds later; so this layer builds the
``RateLimitMiddleware`` on the first request from ``app.state.runtime``.

It also resolves the client IP once, through the trusted proxies only, and leaves it in
``scope["state"]["client_ip"]`` for the audit origin (``api/deps.py``), whether limiting is on or off.

API keys are identified by the SHA-256 of the bearer token (no database call). Per-merchant
overrides need the key's merchant: ``merchant_for`` asks the ``KeyAuthenticator``, whose short-TTL
cache the request's own authentication then hits, so it adds no query to the request.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

from starlette.types import ASGIApp, Receive, Scope, Send

from payorch.ratelimit import RateLimitConfig, RateLimitMiddleware, bearer_identity, bearer_token, client_ip
from payorch.runtime import Runtime

_presented_key: ContextVar[str | None] = ContextVar("payorch_presented_key", default=None)


class RuntimeRateLimitMiddleware:
    def __init__(self, app: ASGIApp, *, config: RateLimitConfig) -> None:
        self.app = app
        self._config = config
        self._limited: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["client_ip"] = client_ip(scope, self._config.trusted_proxies)
        if not self._config.enabled:
            await self.app(scope, receive, send)
            return
        limited = self._limited or self._build(scope)
        if not self._config.merchant_overrides:
            await limited(scope, receive, send)
            return
        token = _presented_key.set(bearer_token(scope))
        try:
            await limited(scope, receive, send)
        finally:
            _presented_key.reset(token)

    def _build(self, scope: Scope) -> ASGIApp:
        runtime: Runtime = scope["app"].state.runtime
        authenticator = runtime.authenticator

        async def merchant_for(identity: str) -> str | None:
            presented = _presented_key.get()
            if presented is None or hashlib.sha256(presented.encode()).hexdigest() != identity:
                return None
            caller = await authenticator.authenticate(presented)
            return caller.merchant_id if caller is not None else None

        self._limited = RateLimitMiddleware(
            self.app,
            runtime.limiter,
            self._config,
            identify=bearer_identity,
            merchant_for=merchant_for,
            on_decision=runtime.metrics.ratelimit_decision,
        )
        return self._limited
