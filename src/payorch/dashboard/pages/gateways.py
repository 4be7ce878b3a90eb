"""Gateways: each configured gateway's breaker and how it answered the merchant's attempts lately.

The environment's gateways are listed by name; per-merchant gateway accounts and their routing
slot in here as rows of their own once they exist (the breaker is then per account).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from markupsafe import Markup
from starlette.responses import Response

from payorch.dashboard import charts
from payorch.dashboard.reads import ConsoleReads, Window
from payorch.dashboard.web import ConsoleDep, ViewerDep
from payorch.storage.gateway_stats import AttemptCounts

router = APIRouter()


@dataclass(frozen=True, slots=True)
class WindowView:
    label: str
    totals: AttemptCounts | None
    volume: Markup
    rate: Markup
    latency: Markup


@dataclass(frozen=True, slots=True)
class GatewayView:
    name: str
    kind: str
    breaker: str
    windows: list[WindowView]


def _window(gateway: str, window: Window, now: datetime) -> WindowView:
    starts = charts.bucket_starts(window.since, now, window.bucket_seconds)
    counts = charts.per_bucket(window.by_gateway.get(gateway), starts)
    fmt = "%H:%M" if window.bucket_seconds < 3600 else "%d %b %H:%M"
    x_labels = (starts[0].strftime(fmt), "now")
    rates = [None if c is None or c.authorization_rate is None else c.authorization_rate * 100 for c in counts]
    found = window.by_gateway.get(gateway)
    return WindowView(
        label=window.label,
        totals=None if found is None else found.totals,
        volume=charts.volume_chart(f"{gateway}: attempts, {window.label.lower()}", counts, x_labels),
        rate=charts.line_chart(
            f"{gateway}: authorization rate, {window.label.lower()}",
            [charts.Series("approved %", rates)],
            x_labels,
            unit="%",
            top=100,
        ),
        latency=charts.line_chart(
            f"{gateway}: latency, {window.label.lower()}",
            [
                charts.Series("p50", [None if c is None else c.p50_ms for c in counts]),
                charts.Series("p99", [None if c is None else c.p99_ms for c in counts]),
            ],
            x_labels,
            unit=" ms",
        ),
    )


@router.get("/gateways")
async def gateways(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    runtime = console.runtime
    now = datetime.now(UTC)
    windows = (
        [] if viewer.merchant_id is None else await ConsoleReads(runtime.db).gateway_windows(viewer.merchant_id, now)
    )
    views = [
        GatewayView(
            name=configured.name,
            kind=configured.config.kind,
            breaker=runtime.breakers.state(configured.name).value,
            windows=[_window(configured.name, window, now) for window in windows],
        )
        for configured in runtime.registry
    ]
    return console.page(request, viewer.session, "gateways.html", title="Gateways", viewer=viewer, gateways=views)
