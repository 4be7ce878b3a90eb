"""Rate-limit settings: one section of ``Settings`` (``PAYORCH_RATELIMIT__...``).

Limits are "at most ``requests`` cost units in any ``window_seconds``" (sliding-window counter, see
docs/ratelimiting.md). A request is charged against two budgets: its client IP (an outer guard that
also covers unauthenticated traffic) and its API key. A route may cost more than one unit and may
have a budget of its own; a merchant may have its own numbers.

The defaults follow Stripe's published limits: about 100 requests a second per live key and 25 in
test mode, over a 10-second window so that a burst (a merchant retrying fifty requests at once) fits.
No route has a budget of its own unless configured.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Network, IPv6Network

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

POLICY_NAME = r"^[a-z][a-z0-9_]{0,31}$"
ROUTE_KEY = re.compile(r"^(?P<method>[A-Z]+|\*) (?P<path>/\S*)$")


class Limit(BaseModel):
    """``requests`` cost units allowed in any window of ``window_seconds``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(gt=0, le=1_000_000)
    window_seconds: int = Field(gt=0, le=86_400)


class RoutePolicy(BaseModel):
    """How one route is charged. With ``limit`` it has its own budget per API key, named ``name``;
    without, it draws ``cost`` units from the key's default budget."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=POLICY_NAME)
    cost: int = Field(default=1, gt=0, le=1000)
    limit: Limit | None = None


class MerchantOverride(BaseModel):
    """Numbers for one merchant: ``key_limit`` replaces the default budget, ``routes`` (keyed by route
    policy name) replace route budgets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_limit: Limit | None = None
    routes: dict[str, Limit] = Field(default_factory=dict)


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    key_limit: Limit = Limit(requests=1000, window_seconds=10)
    """The budget of one live-mode API key (policy ``default``): 100 requests a second on average."""
    test_key_limit: Limit | None = Limit(requests=250, window_seconds=10)
    """The budget of one test-mode key (policy ``default``), or ``key_limit`` when that allows less
    (a test key never gets more than a live one). None: ``key_limit``."""
    ip_limit: Limit = Limit(requests=2000, window_seconds=10)
    """The outer guard per client IP (policy ``ip``), authenticated or not: above a live key's budget,
    so one merchant's backend behind one address is limited by its key, not by its address."""
    routes: dict[str, RoutePolicy] = Field(default_factory=dict)
    """Optional per-route costs and budgets, keyed by ``"METHOD /path/template"`` (``{param}`` matches
    one segment; ``*`` any method). None by default (docs/ratelimiting.md has an example)."""
    merchant_overrides: dict[str, MerchantOverride] = Field(default_factory=dict)
    trusted_proxies: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    """CIDRs whose ``X-Forwarded-For`` is believed. Empty: the TCP peer is the client."""
    redis_timeout_ms: int = Field(default=50, gt=0, le=10_000)
    """A Redis decision slower than this is answered in process instead."""
    fallback_log_interval_seconds: float = Field(default=60.0, gt=0)
    fallback_probe_interval_seconds: float = Field(default=1.0, gt=0)
    """While Redis is failing, how often one request tries it again."""
    exempt_paths: list[str] = Field(default_factory=lambda: ["/healthz", "/readyz", "/metrics"])

    def key_limit_for(self, *, livemode: bool) -> Limit:
        """The default budget of a key of this mode."""
        if livemode or self.test_key_limit is None:
            return self.key_limit
        test, live = self.test_key_limit, self.key_limit
        return test if test.requests / test.window_seconds <= live.requests / live.window_seconds else live

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_cidrs(cls, value: object) -> object:
        # PAYORCH_RATELIMIT__TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16 as well as a JSON list.
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("routes")
    @classmethod
    def _check_route_keys(cls, routes: dict[str, RoutePolicy]) -> dict[str, RoutePolicy]:
        names = [policy.name for policy in routes.values()]
        if len(set(names)) != len(names):
            raise ValueError("route policy names must be unique")
        for key in routes:
            if not ROUTE_KEY.match(key):
                raise ValueError(f"route key {key!r} is not 'METHOD /path/template'")
        if {"default", "ip"} & set(names):
            raise ValueError("'default' and 'ip' are reserved policy names")
        return routes

    @model_validator(mode="after")
    def _costs_fit_budgets(self) -> RateLimitConfig:
        for key, policy in self.routes.items():
            budget = policy.limit or self.key_limit_for(livemode=False)
            if policy.cost > budget.requests:
                raise ValueError(f"route {key!r} costs more than its whole budget")
        known = {policy.name for policy in self.routes.values()}
        for merchant, override in self.merchant_overrides.items():
            unknown = set(override.routes) - known
            if unknown:
                raise ValueError(f"merchant {merchant}: override names unknown routes {sorted(unknown)}")
        return self
