"""Prometheus metrics: one ``Metrics`` per Runtime, on its own ``CollectorRegistry``.

Other modules count through the narrow methods here (``charge_finished``, ``attempt``,
``webhook_delivery``, ...) and never import prometheus themselves. Labels are small closed sets:
a gateway name, an outcome, a route template, a status code. Never an id, an amount or a secret:
a raw path (``/v1/charges/ch_...``) is never a label, only the template it matched.

Gauges that describe shared state (reconciler backlog, audit outbox lag) are read from the database
when ``/metrics`` is scraped, so every API replica reports the same numbers whichever process does
the work; breaker states are read from the breakers at scrape time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from payorch.storage import audit as audit_repo
from payorch.storage import charges as charges_repo
from payorch.storage.database import Database

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

BREAKER_STATE_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}
"""``payorch_gateway_breaker_state``: 0 closed, 1 half-open, 2 open."""

# Gateway calls run from tens of milliseconds to a gateway's full timeout (up to tens of seconds).
_GATEWAY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 15.0, 30.0, 60.0)
_SCRAPE_READ_TIMEOUT_S = 3.0
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)

BreakerStates = Callable[[], Mapping[str, str]]


class _BreakerCollector(Collector):
    """Reads breaker states when scraped, so the gauge never goes stale between charges."""

    def __init__(self) -> None:
        self.source: BreakerStates | None = None

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "payorch_gateway_breaker_state",
            "Circuit breaker state per gateway: 0 closed, 1 half-open, 2 open.",
            labels=["gateway"],
        )
        if self.source is not None:
            try:
                states = dict(self.source())
            except Exception:
                log.exception("reading breaker states failed")
                states = {}
            for gateway, state in sorted(states.items()):
                family.add_metric([gateway], BREAKER_STATE_VALUES.get(state, 2))
        yield family


class Metrics:
    """Every payorch metric, registered on ``registry`` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "payorch_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "payorch_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.charges = Counter(
            "payorch_charges", "Charges finished, by deciding gateway and outcome.", ["gateway", "outcome"], registry=r
        )
        self.gateway_attempts = Counter(
            "payorch_gateway_attempts", "Gateway calls, by gateway and outcome.", ["gateway", "outcome"], registry=r
        )
        self.gateway_attempt_seconds = Histogram(
            "payorch_gateway_attempt_seconds",
            "Duration of one attempt at a gateway (the call and any lookup), by gateway.",
            ["gateway"],
            buckets=_GATEWAY_BUCKETS,
            registry=r,
        )
        self._breakers = _BreakerCollector()
        r.register(self._breakers)
        self.reconciler_backlog = Gauge(
            "payorch_reconciler_backlog", "Gateway attempts whose outcome is not yet known.", registry=r
        )
        self.audit_outbox_lag = Gauge(
            "payorch_audit_outbox_lag_seconds",
            "Age of the oldest audit event not yet shipped to a sink (0 when caught up).",
            ["sink"],
            registry=r,
        )
        self.audit_shipped = Counter(
            "payorch_audit_shipped_events", "Audit events shipped to a sink.", ["sink"], registry=r
        )
        self.audit_failed = Counter(
            "payorch_audit_failed_events",
            "Audit events in batches a sink refused or could not take (retried later).",
            ["sink"],
            registry=r,
        )
        self.audit_sink_up = Gauge(
            "payorch_audit_sink_up",
            "1 while an audit sink takes events, 0 while it is down, hanging or misconfigured (retried).",
            ["sink"],
            registry=r,
        )
        self.audit_write_failures = Counter(
            "payorch_audit_write_failures",
            "Audit events of refused requests that could not be written (the request was answered anyway).",
            ["kind"],
            registry=r,
        )
        self.audit_window_fallbacks = Counter(
            "payorch_audit_window_fallbacks",
            "Failed-authentication windows counted in process because Redis failed or was slow.",
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "payorch_webhook_deliveries", "Webhook delivery attempts, by outcome.", ["outcome"], registry=r
        )
        self.ratelimit_decisions = Counter(
            "payorch_ratelimit_decisions", "Rate-limit decisions, allowed or refused.", ["decision"], registry=r
        )
        self.ratelimit_fallbacks = Counter(
            "payorch_ratelimit_fallbacks",
            "Rate-limit decisions answered in process because Redis failed or was slow.",
            registry=r,
        )
        self.scrape_errors = Counter(
            "payorch_metrics_scrape_errors", "Database reads for /metrics that failed.", ["gauge"], registry=r
        )

    # -- counting, for the rest of payorch -----------------------------------------------------------

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_duration.labels(method, route).observe(seconds)

    def charge_finished(self, gateway: str, outcome: str) -> None:
        """A charge reached the state it is answered with (succeeded, authorized, failed, processing)."""
        self.charges.labels(gateway, outcome).inc()

    def attempt(self, gateway: str, outcome: str, seconds: float) -> None:
        """One attempt at a gateway finished with ``outcome`` (approved, hard_decline, ...)."""
        self.gateway_attempts.labels(gateway, outcome).inc()
        self.gateway_attempt_seconds.labels(gateway).observe(seconds)

    def webhook_delivery(self, outcome: str) -> None:
        """One delivery attempt to a merchant endpoint (delivered, failed, dead_lettered, ...)."""
        self.webhook_deliveries.labels(outcome).inc()

    def ratelimit_decision(self, decision: str) -> None:
        self.ratelimit_decisions.labels(decision).inc()

    def ratelimit_fallback(self) -> None:
        self.ratelimit_fallbacks.inc()

    def watch_breakers(self, states: BreakerStates) -> None:
        """Report ``states()`` (gateway -> closed | half_open | open) at every scrape."""
        self._breakers.source = states

    def set_backlog(self, unresolved: int) -> None:
        self.reconciler_backlog.set(unresolved)

    def audit_batch_shipped(self, sink: str, events: int) -> None:
        self.audit_shipped.labels(sink).inc(events)

    def audit_batch_failed(self, sink: str, events: int) -> None:
        self.audit_failed.labels(sink).inc(events)

    def set_audit_sink_up(self, sink: str, up: bool) -> None:
        self.audit_sink_up.labels(sink).set(1 if up else 0)

    def audit_write_failed(self, kind: str) -> None:
        """An audit event of a refused request or a failed authentication was lost (``kind``)."""
        self.audit_write_failures.labels(kind).inc()

    def audit_window_fallback(self) -> None:
        self.audit_window_fallbacks.inc()

    def set_outbox_lag(self, lag_by_sink: Mapping[str, float]) -> None:
        for sink, seconds in lag_by_sink.items():
            self.audit_outbox_lag.labels(sink).set(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def refresh_database_gauges(
    metrics: Metrics, db: Database, sinks: Sequence[str]
) -> None:
    """Set the backlog and outbox-lag gauges from the database (a few short reads).
    A failed read keeps the last values and counts a scrape error; the scrape itself still answers."""
    try:
        async with asyncio.timeout(_SCRAPE_READ_TIMEOUT_S), db.connection() as connection:
            metrics.set_backlog(await charges_repo.count_unresolved_attempts(connection))
            cursors = await audit_repo.get_cursors(connection)
            lag = {
                sink: await audit_repo.unshipped_lag(connection, cursors.get(sink, 0))
                for sink in sorted(set(sinks) | set(cursors))
            }
            metrics.set_outbox_lag(lag)
    except Exception:
        log.warning("reading reconciler backlog and audit lag for /metrics failed", exc_info=True)
        metrics.scrape_errors.labels("database").inc()
