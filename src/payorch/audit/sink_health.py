"""Each sink's health as the shipper sees it, and its backoff: exponential, bounded, reset on success.

``SinkHealth`` is what the worker's ``/healthz`` lists and what ``payorch_audit_sink_up`` reports.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from payorch.audit.sinks.base import SinkMisconfigured

SinkState = Literal["starting", "up", "down", "misconfigured"]
"""``starting``: not checked yet; ``up``: its last call succeeded; ``down``: unreachable, hanging or
refusing for now; ``misconfigured``: reachable but refusing the configuration (no bucket, no Object
Lock, a refused credential). A sink that is down or misconfigured is retried with backoff."""


@dataclass(frozen=True, slots=True)
class SinkHealth:
    sink: str
    state: SinkState
    error: str | None
    consecutive_failures: int
    retry_in_seconds: float | None
    lag_seconds: float | None
    """Age of the oldest event this sink has not got yet (chained or not); 0 when caught up."""
    last_success_at: dt.datetime | None

    @property
    def healthy(self) -> bool:
        return self.state in ("starting", "up")

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "healthy": self.healthy,
            "error": self.error,
            "consecutive_failures": self.consecutive_failures,
            "retry_in_seconds": None if self.retry_in_seconds is None else round(self.retry_in_seconds, 3),
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "last_success_at": None if self.last_success_at is None else self.last_success_at.isoformat(),
        }


@dataclass(slots=True)
class SinkTracker:
    """One sink's state in the shipper: checked or not, its failures, its backoff, its lag."""

    name: str
    backoff_initial: float
    backoff_max: float
    checked: bool = False
    state: SinkState = "starting"
    error: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    lag: float | None = None
    last_success_at: dt.datetime | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when new links were chained: the sink's loop looks at once instead of at its next poll."""

    def succeeded(self) -> bool:
        """Record a successful call; True when the sink was not up before."""
        changed = self.state != "up"
        self.state, self.error, self.failures, self.retry_at = "up", None, 0, 0.0
        self.checked = True
        self.last_success_at = dt.datetime.now(dt.UTC)
        return changed

    def failed(self, exc: Exception, now: float) -> bool:
        """Record a failed call and schedule the retry; True when the sink was up (or starting) before."""
        changed = self.state in ("up", "starting")
        self.failures += 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** min(self.failures - 1, 30))
        self.retry_at = now + delay * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not a secret)
        misconfigured = isinstance(exc, SinkMisconfigured)
        self.state = "misconfigured" if misconfigured else "down"
        self.error = str(exc) or type(exc).__name__
        if misconfigured:
            self.checked = False  # checked again before the next batch
        return changed

    def snapshot(self, now: float) -> SinkHealth:
        retry_in = max(0.0, self.retry_at - now) if self.state in ("down", "misconfigured") else None
        return SinkHealth(
            sink=self.name,
            state=self.state,
            error=self.error,
            consecutive_failures=self.failures,
            retry_in_seconds=retry_in,
            lag_seconds=self.lag,
            last_success_at=self.last_success_at,
        )
