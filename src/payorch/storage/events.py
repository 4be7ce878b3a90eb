"""Events: written by the database triggers (migration 0004) or by ``emit``; fanned out to webhook
endpoints as ``webhook_deliveries`` rows (the outbox)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

CHANNEL = "payorch_events"
"""The NOTIFY channel; the payload is an event id, never the row."""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    merchant_id: str
    livemode: bool
    type: str
    resource_type: str
    resource_id: str
    payload: dict[str, Any]
    created_at: datetime


def _event(row: Row[Any]) -> Event:
    mapping = row._mapping
    return Event(**{name: mapping[name] for name in Event.__slots__})


async def emit(
    session: AsyncSession,
    *,
    merchant_id: str,
    livemode: bool,
    type: str,
    resource_type: str,
    resource_id: str,
    payload: dict[str, Any],
) -> str:
    """Write an event (and NOTIFY its id) in the session's transaction; for events no row change makes."""
    result = await session.execute(
        text(
            "SELECT payorch_emit_event(:merchant_id, :livemode, :type, :resource_type, :resource_id, "
            "CAST(:payload AS jsonb))"
        ),
        {
            "merchant_id": merchant_id,
            "livemode": livemode,
            "type": type,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "payload": json.dumps(payload, separators=(",", ":")),
        },
    )
    return str(result.scalar_one())


async def list_for_resource(session: AsyncSession, merchant_id: str, resource_id: str) -> list[Event]:
    """A resource's events, oldest first."""
    result = await session.execute(
        text("SELECT * FROM events WHERE merchant_id = :merchant_id AND resource_id = :resource_id ORDER BY id"),
        {"merchant_id": merchant_id, "resource_id": resource_id},
    )
    return [_event(row) for row in result.all()]


async def get_event(session: AsyncSession, merchant_id: str, event_id: str) -> Event | None:
    result = await session.execute(
        text("SELECT * FROM events WHERE merchant_id = :merchant_id AND id = :id"),
        {"merchant_id": merchant_id, "id": event_id},
    )
    row = result.one_or_none()
    return None if row is None else _event(row)


@dataclass(frozen=True, slots=True)
class FanOut:
    events: int
    deliveries: int


async def fan_out(session: AsyncSession, *, limit: int, retry_window_seconds: float) -> FanOut:
    """Claim events not yet fanned out (``FOR UPDATE SKIP LOCKED``: several dispatchers share the work)
    and queue one delivery per matching endpoint: same merchant and mode, the event's type enabled,
    created before the event. One transaction: an event is fanned out exactly once."""
    result = await session.execute(
        text(
            """
            WITH claimed AS (
                SELECT merchant_id, id, livemode, type, created_at FROM events
                 WHERE fanned_out_at IS NULL
                 ORDER BY created_at
                 LIMIT :limit
                 FOR UPDATE SKIP LOCKED
            ), marked AS (
                UPDATE events AS e SET fanned_out_at = now()
                  FROM claimed AS c
                 WHERE e.merchant_id = c.merchant_id AND e.id = c.id
                RETURNING e.id
            ), queued AS (
                INSERT INTO webhook_deliveries (id, merchant_id, endpoint_id, event_id, status, next_attempt_at,
                                                give_up_after)
                SELECT payorch_new_id('whd'), c.merchant_id, w.id, c.id, 'pending', now(),
                       now() + make_interval(secs => :window)
                  FROM claimed AS c
                  JOIN webhook_endpoints AS w
                    ON w.merchant_id = c.merchant_id AND w.livemode = c.livemode AND w.deleted_at IS NULL
                   AND w.created_at <= c.created_at
                   AND (c.type = ANY (w.enabled_events) OR '*' = ANY (w.enabled_events))
                ON CONFLICT (merchant_id, endpoint_id, event_id) DO NOTHING
                RETURNING id
            )
            SELECT (SELECT count(*) FROM marked) AS events, (SELECT count(*) FROM queued) AS deliveries
            """
        ),
        {"limit": limit, "window": retry_window_seconds},
    )
    row = result.one()
    return FanOut(events=int(row.events), deliveries=int(row.deliveries))


async def emit_for_charge(
    session: AsyncSession,
    merchant_id: str,
    charge_id: str,
    type: str,
    extra: dict[str, Any],
) -> str | None:
    """An event about a charge that no column change records (a dispute): the charge's snapshot plus
    ``extra``, written by the same SQL function the triggers use."""
    result = await session.execute(
        text(
            """
            SELECT payorch_emit_event(c.merchant_id, c.livemode, :type, 'charge', c.id,
                                      payorch_charge_json(c) || CAST(:extra AS jsonb))
              FROM charges AS c
             WHERE c.merchant_id = :merchant_id AND c.id = :charge_id
            """
        ),
        {
            "merchant_id": merchant_id,
            "charge_id": charge_id,
            "type": type,
            "extra": json.dumps(extra, separators=(",", ":")),
        },
    )
    event_id = result.scalar_one_or_none()
    return None if event_id is None else str(event_id)
