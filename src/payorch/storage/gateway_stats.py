"""How each gateway answered one merchant's attempts lately (the dashboard's Gateways page).

One statement per window: calls, approvals, declines and failures, and the median and 99th
percentile latency, per gateway and time bucket, with each gateway's totals over the whole window
(``GROUPING SETS``). The window is a range of attempt ids (ids sort by creation time), read from the
merchant's primary key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from payorch.ids import time_bound
from payorch.storage.sql import Connection, Record, Statement


@dataclass(frozen=True, slots=True)
class AttemptCounts:
    calls: int
    approved: int
    declined: int
    failed: int
    """Not sent or unknown: the gateway's health, not the card's answer."""
    p50_ms: float | None
    p99_ms: float | None

    @property
    def authorization_rate(self) -> float | None:
        """Approved attempts among all that finished; None with none."""
        return self.approved / self.calls if self.calls else None


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    counts: AttemptCounts


@dataclass(slots=True)
class GatewayWindow:
    gateway: str
    totals: AttemptCounts
    buckets: list[Bucket] = field(default_factory=list)


_WINDOW = Statement("""
    SELECT a.gateway, b.bucket, count(*) AS calls,
           count(*) FILTER (WHERE a.status = 'approved') AS approved,
           count(*) FILTER (WHERE a.status = 'declined') AS declined,
           count(*) FILTER (WHERE a.status IN ('not_sent', 'unknown')) AS failed,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY a.latency_ms) AS p50_ms,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY a.latency_ms) AS p99_ms
      FROM charge_attempts AS a,
           LATERAL (SELECT floor(extract(epoch FROM a.created_at) / :bucket_seconds::integer)::bigint AS bucket) AS b
     WHERE a.merchant_id = :merchant_id::text AND a.id >= :since_id::text AND a.status <> 'pending'
     GROUP BY GROUPING SETS ((a.gateway, b.bucket), (a.gateway))
     ORDER BY a.gateway, b.bucket NULLS FIRST
""")


def _counts(row: Record) -> AttemptCounts:
    return AttemptCounts(
        calls=int(row["calls"]),
        approved=int(row["approved"]),
        declined=int(row["declined"]),
        failed=int(row["failed"]),
        p50_ms=None if row["p50_ms"] is None else float(row["p50_ms"]),
        p99_ms=None if row["p99_ms"] is None else float(row["p99_ms"]),
    )


async def attempt_window(
    connection: Connection, merchant_id: str, *, since: datetime, bucket_seconds: int
) -> dict[str, GatewayWindow]:
    """Each gateway that ``merchant_id``'s attempts went to since ``since``: its totals and its
    buckets of ``bucket_seconds`` (only those with attempts), oldest first."""
    rows = await _WINDOW.fetch(
        connection, merchant_id=merchant_id, since_id=time_bound("att", since), bucket_seconds=bucket_seconds
    )
    windows: dict[str, GatewayWindow] = {}
    for row in rows:
        gateway = str(row["gateway"])
        if row["bucket"] is None:
            windows[gateway] = GatewayWindow(gateway, _counts(row))
        else:
            start = datetime.fromtimestamp(int(row["bucket"]) * bucket_seconds, UTC)
            windows[gateway].buckets.append(Bucket(start, _counts(row)))
    return windows
