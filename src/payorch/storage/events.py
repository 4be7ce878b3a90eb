"""Events: written by the database triggers (migration 0004) or by ``emit``; fanned out to webhook
endpoints as ``webhook_deliveries`` rows (the outbox)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payorch.storage.sql import Connection, Statement, row_to

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
    sequence: int
    """The event's place among its object's events: 1, 2, 3, ... with no gaps (migration 0008)."""


@dataclass(frozen=True, slots=True)
class FanOut:
    events: int
    deliveries: int


_EVENT_COLUMNS = ", ".join(field.name for field in fields(Event))

_EMIT = Statement("""
    SELECT payorch_emit_event(:merchant_id::text, :livemode::boolean, :type::text, :resource_type::text,
                              :resource_id::text, :payload::jsonb)
""")

# In the order they were written: their per-object sequence.
_LIST_FOR_RESOURCE = Statement(f"""
    SELECT {_EVENT_COLUMNS} FROM events
     WHERE merchant_id = :merchant_id::text AND resource_id = :resource_id::text
     ORDER BY sequence
""")

_GET_EVENT = Statement(f"""
    SELECT {_EVENT_COLUMNS} FROM events WHERE merchant_id = :merchant_id::text AND id = :event_id::text
""")

_FAN_OUT = Statement("""
    WITH claimed AS (
        SELECT merchant_id, id, livemode, type, created_at FROM events
         WHERE fanned_out_at IS NULL
         ORDER BY created_at
         LIMIT :limit::integer
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
               now() + make_interval(secs => :window_seconds::float8)
          FROM claimed AS c
          JOIN webhook_endpoints AS w
            ON w.merchant_id = c.merchant_id AND w.livemode = c.livemode AND w.deleted_at IS NULL
           AND w.created_at <= c.created_at
           AND (c.type = ANY (w.enabled_events) OR '*' = ANY (w.enabled_events))
        ON CONFLICT (merchant_id, endpoint_id, event_id) DO NOTHING
        RETURNING id
    )
    SELECT (SELECT count(*) FROM marked) AS events, (SELECT count(*) FROM queued) AS deliveries
""")

_EMIT_FOR_CHARGE = Statement("""
    SELECT payorch_emit_event(c.merchant_id, c.livemode, :type::text, 'charge', c.id,
                              payorch_charge_json(c) || :extra::jsonb)
      FROM charges AS c
     WHERE c.merchant_id = :merchant_id::text AND c.id = :charge_id::text
""")


async def emit(
    connection: Connection,
    *,
    merchant_id: str,
    livemode: bool,
    type: str,
    resource_type: str,
    resource_id: str,
    payload: dict[str, Any],
) -> str:
    """Write an event (and NOTIFY its id) in the connection's transaction; for events no row change makes."""
    event_id = await _EMIT.fetchval(
        connection,
        merchant_id=merchant_id,
        livemode=livemode,
        type=type,
        resource_type=resource_type,
        resource_id=resource_id,
        payload=payload,
    )
    return str(event_id)


async def list_for_resource(connection: Connection, merchant_id: str, resource_id: str) -> list[Event]:
    """A resource's events, oldest first."""
    rows = await _LIST_FOR_RESOURCE.fetch(connection, merchant_id=merchant_id, resource_id=resource_id)
    return [row_to(Event, row) for row in rows]


async def get_event(connection: Connection, merchant_id: str, event_id: str) -> Event | None:
    row = await _GET_EVENT.fetchrow(connection, merchant_id=merchant_id, event_id=event_id)
    return None if row is None else row_to(Event, row)


async def fan_out(connection: Connection, *, limit: int, retry_window_seconds: float) -> FanOut:
    """Claim events not yet fanned out (``FOR UPDATE SKIP LOCKED``: several dispatchers share the work)
    and queue one delivery per matching endpoint: same merchant and mode, the event's type enabled,
    created before the event. One statement: an event is fanned out exactly once."""
    (row,) = await _FAN_OUT.fetch(connection, limit=limit, window_seconds=retry_window_seconds)
    return FanOut(events=int(row["events"]), deliveries=int(row["deliveries"]))


async def emit_for_charge(
    connection: Connection,
    merchant_id: str,
    charge_id: str,
    type: str,
    extra: dict[str, Any],
) -> str | None:
    """An event about a charge that no column change records (a dispute): the charge's snapshot plus
    ``extra``, written by the same SQL function the triggers use."""
    event_id = await _EMIT_FOR_CHARGE.fetchval(
        connection, merchant_id=merchant_id, charge_id=charge_id, type=type, extra=extra
    )
    return None if event_id is None else str(event_id)
