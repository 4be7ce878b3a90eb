"""The ASGI middleware: the first thing every request meets (before idempotency, before auth).

Each request is charged to its client IP (policy ``ip``) and, when it carries an API key, to that
key's budget for the route (policy ``default`` or the route's own). Limited responses carry the
IETF ``RateLimit-Policy`` and ``RateLimit`` fields (draft-ietf-httpapi-ratelimit-headers, structured
field lists); a refusal is a 429 with ``Retry-After`` and the API's error envelope.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.ratelimit.config import ROUTE_KEY, Limit, RateLimitConfig, RoutePolicy
from payorch.ratelimit.limiter import Decision, Limiter, hit_all

logger = logging.getLogger(__name__)

Identify = Callable[[Scope], str | None]
MerchantFor = Callable[[str], Awaitable[str | None]]
IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def bearer_token(scope: Scope) -> str | None:
    """The token of the first ``Authorization: Bearer ...`` header, if any."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            return token if scheme.lower() == "bearer" and token else None
    return None


def bearer_identity(scope: Scope) -> str | None:
    """SHA-256 of the bearer token, so neither Redis nor logs ever hold a key."""
    token = bearer_token(scope)
    return hashlib.sha256(token.encode()).hexdigest() if token is not None else None


def bearer_is_live(scope: Scope) -> bool:
    """Whether the bearer token is a live-mode key (``sk_live_...``); anything else gets test limits."""
    token = bearer_token(scope)
    return token is not None and token.startswith("sk_live_")


def _parse_hop(raw: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` hop: ``1.2.3.4``, ``1.2.3.4:80``, ``2001:db8::1``, ``[2001:db8::1]:80``."""
    raw = raw.strip()
    if raw.startswith("["):
        raw = raw[1 : raw.find("]")] if "]" in raw else ""
    elif raw.count(":") == 1:
        raw = raw.split(":", 1)[0]
    try:
        address = ip_address(raw)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_ip(scope: Scope, trusted_proxies: Sequence[Network]) -> str:
    """The TCP peer, unless it is a trusted proxy: then the right-most ``X-Forwarded-For`` hop that is
    not itself a trusted proxy. Hops left of that one are the client's word and are ignored."""
    client = scope.get("client")
    peer_text = client[0] if client else ""
    peer = _parse_hop(peer_text) if peer_text else None
    if peer is None:
        return peer_text or "unknown"

    def trusted(address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in trusted_proxies)

    if not trusted(peer):
        return str(peer)
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops.extend(value.decode("latin-1").split(","))
    nearest = peer
    for raw in reversed(hops):
        hop = _parse_hop(raw)
        if hop is None:
            # Our own proxy wrote something unreadable: the last address we can vouch for is all we have.
            break
        if not trusted(hop):
            return str(hop)
        nearest = hop
    return str(nearest)


class RouteTable:
    """Matches a request to its ``RoutePolicy`` by method and path template (``{param}`` = one segment)."""

    def __init__(self, routes: dict[str, RoutePolicy]) -> None:
        entries: list[tuple[int, int, str, re.Pattern[str], RoutePolicy]] = []
        for key, policy in routes.items():
            match = ROUTE_KEY.match(key)
            if match is None:  # RateLimitConfig already refuses these
                raise ValueError(f"bad route key {key!r}")
            template = match["path"].rstrip("/") or "/"
            params = template.count("{")
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{[^/]*?\\\}", "[^/]+", pattern)
            # Literal templates win over templated ones, longer over shorter.
            entries.append((params, -len(template), match["method"], re.compile(f"^{pattern}$"), policy))
        entries.sort(key=lambda entry: (entry[0], entry[1]))
        self._entries = [(method, pattern, policy) for _, _, method, pattern, policy in entries]

    def match(self, method: str, path: str) -> RoutePolicy | None:
        path = path.rstrip("/") or "/"
        for route_method, pattern, policy in self._entries:
            if route_method in ("*", method) and pattern.match(path):
                return policy
        return None


@dataclass(frozen=True, slots=True)
class _Check:
    policy: str
    key: str
    limit: Limit
    cost: int


class RateLimitMiddleware:
    """Pure ASGI. ``identify(scope)`` names the API key (default: SHA-256 of the bearer token);
    ``merchant_for(identity)`` names its merchant for ``merchant_overrides``; ``on_decision`` is
    called with ``"allowed"`` or ``"refused"`` for every limited request (a metrics hook)."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Limiter,
        config: RateLimitConfig,
        identify: Identify = bearer_identity,
        merchant_for: MerchantFor | None = None,
        on_decision: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self._limiter = limiter
        self._config = config
        self._identify = identify
        self._merchant_for = merchant_for
        self._on_decision = on_decision
        self._routes = RouteTable(config.routes)
        self._exempt = frozenset(path.rstrip("/") or "/" for path in config.exempt_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._config.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if (path.rstrip("/") or "/") in self._exempt:
            await self.app(scope, receive, send)
            return
        checks = await self._checks(scope)
        decisions = await hit_all(
            self._limiter,
            [(check.key, check.limit.requests, check.limit.window_seconds, check.cost) for check in checks],
        )
        headers = _ratelimit_headers(checks, decisions)
        refused = [decision for decision in decisions if not decision.allowed]
        self._count("refused" if refused else "allowed")
        if refused:
            await self._refuse(scope, send, headers, max(decision.retry_after for decision in refused))
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_fields)

    async def _checks(self, scope: Scope) -> list[_Check]:
        config = self._config
        checks = [_Check("ip", f"ip:{client_ip(scope, config.trusted_proxies)}", config.ip_limit, 1)]
        identity = self._identify(scope)
        if identity is None:
            return checks
        override = None
        if self._merchant_for is not None and config.merchant_overrides:
            try:
                merchant = await self._merchant_for(identity)
            except Exception:
                logger.exception("merchant lookup for rate limits failed; default limits apply")
                merchant = None
            override = config.merchant_overrides.get(merchant) if merchant else None
        route = self._routes.match(scope["method"], scope["path"])
        cost = route.cost if route is not None else 1
        if route is not None and route.limit is not None:
            limit = (override.routes.get(route.name) if override else None) or route.limit
            policy = route.name
        else:
            limit = (override.key_limit if override else None) or config.key_limit_for(livemode=bearer_is_live(scope))
            policy = "default"
        checks.append(_Check(policy, f"key:{identity}:{policy}", limit, min(cost, limit.requests)))
        return checks

    async def _refuse(self, scope: Scope, send: Send, headers: list[tuple[bytes, bytes]], retry: float) -> None:
        request_id = _request_id(scope)
        body = json.dumps(
            {
                "error": {
                    "type": "rate_limit_error",
                    "code": "rate_limited",
                    "message": "Too many requests: retry after the number of seconds in Retry-After.",
                    "request_id": request_id[0],
                }
            }
        ).encode()
        response_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(max(1, math.ceil(retry))).encode()),
            *headers,
        ]
        if request_id[1]:
            response_headers.append((b"request-id", request_id[0].encode()))
        await send({"type": "http.response.start", "status": 429, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def _count(self, outcome: str) -> None:
        if self._on_decision is None:
            return
        try:
            self._on_decision(outcome)
        except Exception:
            logger.exception("rate-limit metrics hook failed")


def _request_id(scope: Scope) -> tuple[str, bool]:
    """The app's request id if an outer layer already chose one, else a new one (and True: the
    429 must then carry the ``Request-Id`` header itself)."""
    state = scope.get("state")
    existing = state.get("request_id") if isinstance(state, dict) else getattr(state, "request_id", None)
    if isinstance(existing, str) and existing:
        return existing, False
    return f"req_{uuid.uuid4().hex}", True


def _ratelimit_headers(checks: Sequence[_Check], decisions: Sequence[Decision]) -> list[tuple[bytes, bytes]]:
    policies = ", ".join(f'"{c.policy}";q={c.limit.requests};w={c.limit.window_seconds}' for c in checks)
    states = ", ".join(
        f'"{c.policy}";r={d.remaining};t={math.ceil(d.reset_after)}' for c, d in zip(checks, decisions, strict=True)
    )
    return [(b"ratelimit-policy", policies.encode()), (b"ratelimit", states.encode())]
