"""Settings: environment (``PAYORCH_`` prefix, ``__`` for nesting), then an optional ``payorch.toml``.

With no configuration at all payorch runs embedded (DESIGN.md section 1): an embedded Postgres under
``data_dir``, in-process rate limiting, the gateway packages' embedded gateways (two simulated
processors). Production refuses placeholder secrets, the gateways' included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from payorch.accounts.config import AccountsConfig
from payorch.audit.config import AuditConfig
from payorch.banking.config import BankingConfig
from payorch.dashboard.config import DashboardConfig
from payorch.gateways.config import GatewayConfig
from payorch.gateways.registry import AnyGatewayConfig, embedded_gateways
from payorch.orchestration.breaker import BreakerConfig
from payorch.orchestration.config import ReconcilerConfig, RoutingConfig
from payorch.payments.config import IdempotencyConfig
from payorch.ratelimit.config import RateLimitConfig
from payorch.webhooks.config import WebhooksConfig


class ApiConfig(BaseModel):
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_json_depth: int = Field(default=16, gt=1)
    api_key_cache_seconds: float = Field(default=5.0, ge=0)
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """A client must finish sending its request line and headers within this (slowloris)."""
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """...and its body within this once the headers are in; else 408 and the connection is closed."""
    keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    """An idle keep-alive connection is closed after this."""
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Request line plus headers; more is refused with 431."""
    cors_allowed_origins: list[str] = Field(default_factory=list)
    """Browser origins allowed to call the API (``https://shop.example``). Empty: CORS stays closed."""


DEFAULT_METRICS_PORT = 9464


class MetricsConfig(BaseModel):
    """The operations listener: ``/metrics``, ``/healthz`` and ``/readyz`` on a port of their own,
    apart from the API's public port. ``payorch serve`` and ``payorch worker`` each open it."""

    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the operations listener (``/metrics``, ``/healthz``, ``/readyz``, apart from the API's
    public port; ``payorch worker`` opens it too). Unset: 9464 in production, none otherwise."""
    host: str = "127.0.0.1"
    """Interface of the operations listener (``0.0.0.0`` in a container, so Prometheus can reach it)."""
    on_api_port: bool | None = None
    """Serve ``/metrics`` on the API's public port too. Unset: only when there is no operations listener."""
    reuse_port: bool = False
    """Open the port with ``SO_REUSEPORT``, so that the processes of ``payorch serve --workers N`` share
    it (the command sets this itself; each scrape then reads one of them)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PAYORCH_",
        env_nested_delimiter="__",
        toml_file="payorch.toml",
        extra="forbid",
        # Gateway objects carry credentials: an error names the field and the problem, never echoes
        # the input back (a missing field's error would otherwise print the whole object).
        hide_input_in_errors=True,
    )

    environment: Literal["embedded", "development", "production"] = "embedded"
    database_url: SecretStr | None = None
    """postgresql+asyncpg://... ; unset means the embedded Postgres under ``data_dir``."""
    redis_url: SecretStr | None = None
    """redis://[:password@]host:port/db (rediss:// for TLS); unset: in-process rate limits (embedded)."""
    redis_cluster: bool = False
    """``redis_url`` names one node of a Redis Cluster (the client discovers the others)."""
    redis_timeout_seconds: float = Field(default=1.0, gt=0, le=30)
    """Socket connect and read timeout of every Redis call."""
    data_dir: Path = Path(".payorch")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    partitions: int = Field(default=16, ge=1, le=1024)
    db_pool_size: int = Field(default=10, ge=1, le=500)
    """Database connections each process keeps in its one pool (opened as they are first needed).
    A statement or a short transaction holds one for its round trips, never across a gateway call,
    so a few carry hundreds of charges a second; more made the database slower under load, not
    faster (docs/benchmarks.md). A process opens at most this many, plus one for the webhook
    dispatcher's LISTEN and one for the audit shipper's lock when they run in it."""
    db_generic_plans: bool = True
    """Plan each statement once per connection (``plan_cache_mode=force_generic_plan``): every
    statement on one merchant's rows filters on the partition key and is pruned at run time."""
    log_json: bool | None = None
    gateways: list[AnyGatewayConfig] = Field(default_factory=embedded_gateways)
    """The gateways in routing order, each an object whose ``kind`` picks its gateway package."""
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    accounts: AccountsConfig = Field(default_factory=AccountsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    idempotency: IdempotencyConfig = Field(default_factory=IdempotencyConfig)
    reconciler: ReconcilerConfig = Field(default_factory=ReconcilerConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    ratelimit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    banking: BankingConfig = Field(default_factory=BankingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    run_background_in_api: bool | None = None
    """Run reconciler and purges inside the API process; defaults to on when embedded."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files: the environment is the source
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls), file_secret_settings)

    @field_validator("gateways")
    @classmethod
    def _unique_gateway_names(cls, gateways: list[GatewayConfig]) -> list[GatewayConfig]:
        names = [g.name for g in gateways]
        if any(name.startswith("ga_") for name in names):
            raise ValueError("gateway names may not start with 'ga_' (merchants' own account ids do)")
        if len(set(names)) != len(names):
            raise ValueError("gateway names must be unique")
        if not gateways:
            raise ValueError("at least one gateway is required")
        return gateways

    @model_validator(mode="after")
    def _check_production(self) -> Settings:
        if self.environment == "production":
            if self.database_url is None:
                raise ValueError("production needs PAYORCH_DATABASE_URL")
            for gateway in self.gateways:
                for field, secret in gateway.secrets():
                    if _is_placeholder(secret.get_secret_value()):
                        raise ValueError(f"gateway {gateway.name}: placeholder {field} refused in production")
            problems = [
                *self.banking.production_problems(),
                *self.dashboard.production_problems(_is_placeholder),
                *self.accounts.production_problems(),
            ]
            for problem in problems:
                raise ValueError(problem)
            if self.webhooks.secret_key is None or _is_placeholder(self.webhooks.secret_key.get_secret_value()):
                raise ValueError("production needs PAYORCH_WEBHOOKS__SECRET_KEY (encrypts webhook signing secrets)")
            if self.webhooks.allow_loopback_endpoints:
                raise ValueError("PAYORCH_WEBHOOKS__ALLOW_LOOPBACK_ENDPOINTS is for development; production refuses it")
        if self.idempotency.stale_after_seconds <= self.routing.deadline_ms / 1000 + 5:
            # A request still running past the stale window could be settled by the reconciler
            # underneath it, and its idempotency key taken over by a retry.
            raise ValueError("idempotency.stale_after_seconds must exceed routing.deadline_ms by at least 5 s")
        known = {g.name for g in self.gateways}
        for currency, order in self.routing.order_by_currency.items():
            unknown = set(order) - known
            if unknown:
                raise ValueError(f"routing for {currency} names unknown gateways: {sorted(unknown)}")
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def background_in_api(self) -> bool:
        if self.run_background_in_api is not None:
            return self.run_background_in_api
        return self.embedded

    @property
    def metrics_port(self) -> int | None:
        """The operations listener's port, if there is one."""
        if self.metrics.port is not None:
            return self.metrics.port
        return DEFAULT_METRICS_PORT if self.environment == "production" else None

    @property
    def metrics_on_api_port(self) -> bool:
        if self.metrics.on_api_port is not None:
            return self.metrics.on_api_port
        return self.metrics_port is None

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment == "production"


def _is_placeholder(value: str) -> bool:
    lowered = value.lower()
    # .env.example's placeholder is CHANGE_ME.
    return not value or any(word in lowered for word in ("changeme", "change_me", "placeholder", "example", "xxx"))
