"""Everything built once at start (the database pool, gateways, services, background loops) and closed at stop.

Tests build their own Runtime with their own settings instead of patching import paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster

from payorch.accounts.charge_routing import ChargeRouting
from payorch.accounts.crypto import build_key_wrapper
from payorch.accounts.directory import AccountDirectory
from payorch.accounts.routing_service import RoutingService
from payorch.accounts.service import AccountService
from payorch.audit.auth_failures import AuthFailureAudit
from payorch.audit.failure_windows import RedisWindows
from payorch.audit.refusals import RefusalAudit
from payorch.audit.shipper import AuditShipper, ShipperMetrics, build_shipper
from payorch.audit.sink_health import SinkHealth
from payorch.banking.service import BankLinkService
from payorch.dashboard.users import DashboardUsers
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import GatewayRegistry, build_registry
from payorch.observability.metrics import Metrics, refresh_database_gauges
from payorch.orchestration.breaker import CircuitBreakers
from payorch.orchestration.executor import Executor
from payorch.orchestration.reconcile import Reconciler
from payorch.orchestration.routing import Fee, Router
from payorch.orchestration.routing_stats import MemorySuccessRates, OutcomeRecorder, RedisSuccessRates
from payorch.payments.authentication_expiry import AuthenticationExpiry
from payorch.payments.captures import CaptureService, FollowUpCharge
from payorch.payments.charge_confirm import ConfirmCharge, ConfirmService
from payorch.payments.charge_create import CreateCharge
from payorch.payments.charge_recovery import ChargeRecovery
from payorch.payments.charge_service import ChargeService
from payorch.payments.operations import OperationRunner
from payorch.payments.payment_methods import PaymentMethodService
from payorch.payments.refund_create import CreateRefund, RefundService
from payorch.payments.refunds import RefundLifecycle
from payorch.ratelimit import Limiter, MemoryLimiter, build_limiter
from payorch.security.api_keys import KeyAuthenticator
from payorch.settings import Settings
from payorch.storage import idempotency as idem_repo
from payorch.storage.database import Database, DatabaseConfig
from payorch.storage.sandbox import SandboxLedger
from payorch.webhooks.wiring import Webhooks, build_webhooks

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    """The one pool of database connections (storage/database.py)."""
    registry: GatewayRegistry
    charges: ChargeService
    auth_failures: AuthFailureAudit
    """Failed authentications on the audit trail, counted per key prefix and client IP."""
    charge_recovery: ChargeRecovery
    """Lookups of charge attempts whose outcome is unknown (the reconciler runs it)."""
    reconciler: Reconciler
    authenticator: KeyAuthenticator
    captures: CaptureService
    confirmations: ConfirmService
    """Finishing charges whose customer authenticated (3-D Secure)."""
    refunds: RefundService
    payment_methods: PaymentMethodService
    breakers: CircuitBreakers
    gateway_services: GatewayServices
    """What the gateway packages were given (the sandbox's books, which its page reads too)."""
    webhooks: Webhooks
    """Webhook endpoints, the delivery dispatcher and inbound gateway notifications."""
    directory: AccountDirectory
    """The platform's and merchants' gateway accounts, cached per process."""
    accounts: AccountService
    routing: RoutingService
    outcomes: OutcomeRecorder
    """What ``success_rate`` routing learns from each charge."""
    dashboard_users: DashboardUsers
    """The web console's users: sign-in, lockout, sign-out (``payorch users`` creates them)."""
    metrics: Metrics = field(default_factory=Metrics)
    redis: Redis | RedisCluster | None = None
    """The shared Redis (rate limits); None in the embedded mode."""
    limiter: Limiter = field(default_factory=MemoryLimiter)
    audit_shipper: AuditShipper | None = None
    """Ships the audit trail to the sinks of ``settings.audit``; runs with the background loops."""
    bank_links: BankLinkService | None = None
    """Bank account linking; None when no OAuth provider is configured (``settings.banking``)."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def build(cls, settings: Settings, database_url: str) -> Runtime:
        db = Database(
            DatabaseConfig(database_url, pool_size=settings.db_pool_size, generic_plans=settings.db_generic_plans)
        )
        metrics = Metrics()
        redis = connect_redis(settings)
        if isinstance(redis, RedisCluster):
            await initialize_cluster(redis)
        limiter = build_limiter(settings.ratelimit, redis, on_fallback=metrics.ratelimit_fallback)
        services = GatewayServices(processor_books=SandboxLedger(db))
        registry = build_registry(settings.gateways, services)
        breakers = CircuitBreakers(settings.breaker, {g.name: g.timeout for g in registry})
        executor = Executor(settings.routing, breakers, observer=metrics)
        runner = OperationRunner(db, settings.idempotency)
        directory, charge_routing, outcomes = _routing(settings, db, registry, services, breakers, redis)
        create_charge = CreateCharge(
            db, charge_routing, executor, settings.reconciler, metrics=metrics, outcomes=outcomes
        )
        metrics.watch_breakers(breakers.states)
        charge_recovery = ChargeRecovery(db, directory, settings.reconciler, settings.idempotency)
        refund_lifecycle = RefundLifecycle(db, directory, settings.idempotency, settings.reconciler)
        expiry = AuthenticationExpiry(db, directory, settings.reconciler, charge_recovery)
        reconciler = Reconciler([charge_recovery, expiry, refund_lifecycle], settings.reconciler)
        refusals = RefusalAudit(
            db, timeout=settings.audit.refusals.write_timeout_seconds, on_write_failed=metrics.audit_write_failed
        )
        built = cls(
            settings=settings,
            db=db,
            registry=registry,
            charges=ChargeService(db, runner, create_charge),
            auth_failures=build_auth_failures(settings, redis, refusals, metrics),
            charge_recovery=charge_recovery,
            reconciler=reconciler,
            authenticator=KeyAuthenticator(db, cache_seconds=settings.api.api_key_cache_seconds),
            captures=CaptureService(runner, FollowUpCharge(db, directory), refusals),
            confirmations=ConfirmService(runner, ConfirmCharge(db, directory, charge_recovery)),
            refunds=RefundService(db, runner, CreateRefund(db, refund_lifecycle), refund_lifecycle, refusals),
            payment_methods=PaymentMethodService(db, runner, directory),
            breakers=breakers,
            gateway_services=services,
            webhooks=build_webhooks(
                settings.webhooks,
                db,
                registry,
                charge_recovery,
                refund_lifecycle,
                data_dir=settings.data_dir,
                on_outcome=metrics.webhook_delivery,
                accounts=directory,
            ),
            directory=directory,
            accounts=AccountService(db, directory, directory.wrapper, services, settings.accounts),
            routing=RoutingService(db, directory, charge_routing),
            outcomes=outcomes,
            dashboard_users=DashboardUsers(db, settings.dashboard),
            metrics=metrics,
            redis=redis,
            limiter=limiter,
            audit_shipper=build_shipper(
                settings.audit,
                db,
                data_dir=settings.data_dir,
                metrics=ShipperMetrics(
                    on_shipped=metrics.audit_batch_shipped,
                    on_failed=metrics.audit_batch_failed,
                    on_lag=lambda sink, seconds: metrics.set_outbox_lag({sink: seconds}),
                    on_health=metrics.set_audit_sink_up,
                ),
            ),
            bank_links=BankLinkService.build(db, settings.banking, settings.data_dir),
        )
        # Every process that routes charges listens for changes to merchants' routing set-ups.
        built._spawn("routing-changes", directory.listen)
        return built

    def start_background(self) -> None:
        """The reconciler, the idempotency purge, the webhook dispatcher and the audit shipper (in
        ``payorch worker``, or in the API when embedded). A misconfigured or hanging audit sink never
        ends the shipper, let alone the others: it is reported (``audit_sink_health``) and retried."""
        self._spawn("reconciler", self.reconciler.run_forever)
        self._spawn("idempotency-purge", self._purge_forever)
        self._spawn("webhook-dispatcher", self.webhooks.dispatcher.run_forever)
        if self.audit_shipper is not None:
            self._spawn("audit-shipper", self.audit_shipper.run_forever)
        self.auth_failures.start()  # summaries of windows that API processes left in Redis

    def _spawn(self, name: str, loop: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
        self._tasks.append(asyncio.create_task(loop(self._stop), name=name))

    async def _purge_forever(self, stop: asyncio.Event) -> None:
        config = self.settings.idempotency
        while not stop.is_set():
            try:
                async with self.db.connection() as connection:
                    purged = await idem_repo.purge_older_than(connection, config.ttl_hours)
                if purged:
                    log.info("purged %d idempotency keys older than %d hours", purged, config.ttl_hours)
            except Exception:
                log.exception("idempotency purge failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=config.purge_interval_seconds)

    def background_states(self) -> dict[str, str]:
        """Each background job: ``running``, ``stopped`` or ``failed`` (the worker's ``/healthz``)."""
        states = {}
        for task in self._tasks:
            if not task.done():
                states[task.get_name()] = "running"
            else:
                failed = not task.cancelled() and task.exception() is not None
                states[task.get_name()] = "failed" if failed else "stopped"
        return states

    def audit_sink_health(self) -> dict[str, SinkHealth] | None:
        """Each audit sink's health while this process runs the shipper (None when it does not)."""
        running = any(task.get_name() == "audit-shipper" and not task.done() for task in self._tasks)
        if self.audit_shipper is None or not running:
            return None
        return self.audit_shipper.health()

    async def wait_background(self) -> None:
        await asyncio.gather(*self._tasks)

    async def ready(self) -> dict[str, str]:
        """What /readyz reports: each dependency's state."""
        checks = {"database": "ok"}
        try:
            async with asyncio.timeout(2):
                await self.db.ping()
        except Exception:
            checks["database"] = "unavailable"
        if self.redis is not None:
            checks["redis"] = "ok"
            try:
                async with asyncio.timeout(2):
                    await self.redis.ping()
            except Exception:
                checks["redis"] = "unavailable"
        return checks

    async def refresh_gauges(self) -> None:
        """Read the gauges that describe shared state (reconciler backlog, audit lag) for a scrape."""
        await refresh_database_gauges(self.metrics, self.db, self.settings.audit.sink_kinds())

    async def aclose(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=10)
        await self.auth_failures.aclose()
        await self.outcomes.drain()
        await self.directory.aclose()  # the platform's adapters and every merchant's
        if self.bank_links is not None:
            await self.bank_links.aclose()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        await self.db.close()


def _routing(
    settings: Settings,
    db: Database,
    registry: GatewayRegistry,
    services: GatewayServices,
    breakers: CircuitBreakers,
    redis: Redis | RedisCluster | None,
) -> tuple[AccountDirectory, ChargeRouting, OutcomeRecorder]:
    """The accounts directory, the charge router over it and the success-rate statistics."""
    config = settings.accounts
    platform_fees = {
        name: {currency: Fee(fee.percent_bps, fee.fixed) for currency, fee in fees.items()}
        for name, fees in config.platform_fees.items()
    }
    directory = AccountDirectory(
        db,
        registry,
        build_key_wrapper(config, settings.data_dir, production=settings.environment == "production"),
        services,
        breakers,
        cache_seconds=config.cache_seconds,
        platform_order_by_currency=settings.routing.order_by_currency,
        platform_fees=platform_fees,
    )
    window = config.success_rate_window_seconds
    rates = MemorySuccessRates(window) if redis is None else RedisSuccessRates(redis, window)
    router = Router(rates, exploration=config.success_rate_exploration)
    return directory, ChargeRouting(directory, router, breakers), OutcomeRecorder(rates)


def build_auth_failures(
    settings: Settings, redis: Redis | RedisCluster | None, refusals: RefusalAudit, metrics: Metrics
) -> AuthFailureAudit:
    """Failed-authentication windows in Redis when one is configured, in process otherwise."""
    config = settings.audit.refusals
    shared = None
    if redis is not None:
        shared = RedisWindows(redis, keys_per_ip=config.keys_per_ip, window_seconds=config.window_seconds)
    return AuthFailureAudit(refusals, config, shared=shared, on_fallback=metrics.audit_window_fallback)


async def initialize_cluster(redis: RedisCluster) -> None:
    """Learn the cluster's slot map before the first request. redis-py's cluster client otherwise
    learns it on first use, and concurrent first commands race each other's initialisation: some go
    to the wrong node (MOVED), and the reconnects that follow break commands still in flight. If the
    cluster is down now, the client initialises lazily later (and the limiter falls back meanwhile)."""
    try:
        await redis.initialize()
    except Exception as error:
        log.warning("Redis Cluster not reachable at start (%s); its slot map is learnt on first use", error)


def connect_redis(settings: Settings) -> Redis | RedisCluster | None:
    """The Redis client for ``PAYORCH_REDIS_URL`` (a Cluster when ``PAYORCH_REDIS_CLUSTER=true``), with
    explicit timeouts so a hung Redis costs a bounded wait; None when no URL is set (embedded).
    Connections are opened lazily: a Redis that is down at start is a readiness failure, not a crash."""
    if settings.redis_url is None:
        return None
    url = settings.redis_url.get_secret_value()
    timeout = settings.redis_timeout_seconds
    if settings.redis_cluster:
        return RedisCluster.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
