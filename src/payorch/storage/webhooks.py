"""Webhook endpoints, their deliveries (the outbox), and inbound gateway notifications.

Deliveries are claimed with a lease (``FOR UPDATE SKIP LOCKED``, then ``next_attempt_at`` pushed past
the delivery's timeout): several dispatchers never send one delivery at once, and a dispatcher that
dies mid-delivery only delays it until its lease runs out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payorch.storage.sql import Connection, Record, Statement, row_to


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    merchant_id: str
    livemode: bool
    url: str
    enabled_events: list[str]
    description: str | None
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None
    previous_secret_expires_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    merchant_id: str
    endpoint_id: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    give_up_after: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """A leased delivery with what sending it needs: the event and the endpoint's URL and secrets."""

    delivery: Delivery
    livemode: bool
    event_type: str
    event_payload: dict[str, Any]
    event_created_at: datetime
    event_sequence: int
    url: str
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None
    previous_secret_expires_at: datetime | None


def _columns(cls: Any, alias: str = "") -> str:
    """The select list of a result dataclass: one column per field."""
    return ", ".join(f"{alias}{field.name}" for field in fields(cls))


_ENDPOINT = _columns(Endpoint)
_DELIVERY = _columns(Delivery)

# -- endpoints ------------------------------------------------------------------------------------

_INSERT_ENDPOINT = Statement(f"""
    INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, enabled_events, description, secret_ciphertext)
    VALUES (:endpoint_id::text, :merchant_id::text, :livemode::boolean, :url::text, :enabled_events::text[],
            :description::text, :secret_ciphertext::bytea)
    RETURNING {_ENDPOINT}
""")

_COUNT_ENDPOINTS = Statement("""
    SELECT count(*) FROM webhook_endpoints
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean AND deleted_at IS NULL
""")

_LIST_ENDPOINTS = Statement(f"""
    SELECT {_ENDPOINT} FROM webhook_endpoints
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean AND deleted_at IS NULL
     ORDER BY id DESC
""")

_GET_ENDPOINT_SQL = f"""
    SELECT {_ENDPOINT} FROM webhook_endpoints
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean AND id = :endpoint_id::text
       AND deleted_at IS NULL
"""
_GET_ENDPOINT = Statement(_GET_ENDPOINT_SQL)
_GET_ENDPOINT_FOR_UPDATE = Statement(_GET_ENDPOINT_SQL + " FOR UPDATE")

# Soft-delete the endpoint (its deliveries stay readable) and cancel what it still had queued.
_DELETE_ENDPOINT = Statement("""
    WITH deleted AS (
        UPDATE webhook_endpoints SET deleted_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :endpoint_id::text AND deleted_at IS NULL
    )
    UPDATE webhook_deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = now()
     WHERE merchant_id = :merchant_id::text AND endpoint_id = :endpoint_id::text AND status = 'pending'
""")

_ROTATE_SECRET = Statement(f"""
    UPDATE webhook_endpoints
       SET secret_ciphertext = :secret_ciphertext::bytea, previous_secret_ciphertext = :previous_ciphertext::bytea,
           previous_secret_expires_at = :previous_expires_at::timestamptz
     WHERE merchant_id = :merchant_id::text AND id = :endpoint_id::text AND deleted_at IS NULL
    RETURNING {_ENDPOINT}
""")


def _endpoint(row: Record | None) -> Endpoint | None:
    return None if row is None else row_to(Endpoint, row)


async def insert_endpoint(
    connection: Connection,
    *,
    endpoint_id: str,
    merchant_id: str,
    livemode: bool,
    url: str,
    enabled_events: list[str],
    description: str | None,
    secret_ciphertext: bytes,
) -> Endpoint:
    (row,) = await _INSERT_ENDPOINT.fetch(
        connection,
        endpoint_id=endpoint_id,
        merchant_id=merchant_id,
        livemode=livemode,
        url=url,
        enabled_events=enabled_events,
        description=description,
        secret_ciphertext=secret_ciphertext,
    )
    return row_to(Endpoint, row)


async def count_endpoints(connection: Connection, merchant_id: str, livemode: bool) -> int:
    return int(await _COUNT_ENDPOINTS.fetchval(connection, merchant_id=merchant_id, livemode=livemode))


async def list_endpoints(connection: Connection, merchant_id: str, livemode: bool) -> list[Endpoint]:
    """Newest first."""
    rows = await _LIST_ENDPOINTS.fetch(connection, merchant_id=merchant_id, livemode=livemode)
    return [row_to(Endpoint, row) for row in rows]


async def get_endpoint(
    connection: Connection, merchant_id: str, livemode: bool, endpoint_id: str, *, for_update: bool = False
) -> Endpoint | None:
    statement = _GET_ENDPOINT_FOR_UPDATE if for_update else _GET_ENDPOINT
    row = await statement.fetchrow(connection, merchant_id=merchant_id, livemode=livemode, endpoint_id=endpoint_id)
    return _endpoint(row)


async def delete_endpoint(connection: Connection, merchant_id: str, endpoint_id: str) -> int:
    """Soft-delete the endpoint (its deliveries stay readable) and cancel what it still had queued.
    Returns how many deliveries were canceled."""
    return await _DELETE_ENDPOINT.execute(connection, merchant_id=merchant_id, endpoint_id=endpoint_id)


async def rotate_secret(
    connection: Connection,
    merchant_id: str,
    endpoint_id: str,
    *,
    secret_ciphertext: bytes,
    previous_secret_ciphertext: bytes,
    previous_expires_at: datetime,
) -> Endpoint | None:
    row = await _ROTATE_SECRET.fetchrow(
        connection,
        merchant_id=merchant_id,
        endpoint_id=endpoint_id,
        secret_ciphertext=secret_ciphertext,
        previous_ciphertext=previous_secret_ciphertext,
        previous_expires_at=previous_expires_at,
    )
    return _endpoint(row)


# -- deliveries -----------------------------------------------------------------------------------

_CLAIM_DUE = Statement(f"""
    WITH due AS (
        SELECT merchant_id, id FROM webhook_deliveries
         WHERE status = 'pending' AND next_attempt_at <= now()
         ORDER BY next_attempt_at
         LIMIT :limit::integer
         FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries AS d
       SET next_attempt_at = now() + make_interval(secs => :lease_seconds::float8), attempts = d.attempts + 1,
           updated_at = now()
      FROM due, events AS e, webhook_endpoints AS w
     WHERE d.merchant_id = due.merchant_id AND d.id = due.id
       AND e.merchant_id = d.merchant_id AND e.id = d.event_id
       AND w.merchant_id = d.merchant_id AND w.id = d.endpoint_id
    RETURNING {_columns(Delivery, "d.")}, e.livemode, e.type AS event_type, e.payload AS event_payload,
              e.created_at AS event_created_at, e.sequence AS event_sequence, w.url, w.secret_ciphertext,
              w.previous_secret_ciphertext, w.previous_secret_expires_at
""")

_MARK_DELIVERED = Statement("""
    UPDATE webhook_deliveries
       SET status = 'succeeded', delivered_at = now(), next_attempt_at = NULL,
           last_status_code = :status_code::smallint, last_error = NULL, updated_at = now()
     WHERE merchant_id = :merchant_id::text AND id = :delivery_id::text AND status = 'pending'
""")

# Only the current claimant (same attempt count) may write: a dispatcher whose lease ran out must
# not reschedule another's attempt.
_MARK_FAILED_ATTEMPT = Statement("""
    UPDATE webhook_deliveries
       SET status = CASE WHEN :next_attempt_at::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
           next_attempt_at = :next_attempt_at::timestamptz, last_status_code = :status_code::smallint,
           last_error = :error::text, updated_at = now()
     WHERE merchant_id = :merchant_id::text AND id = :delivery_id::text AND status = 'pending'
       AND attempts = :attempts::integer
    RETURNING status
""")

_LIST_DELIVERIES = Statement(f"""
    SELECT {_DELIVERY} FROM webhook_deliveries
     WHERE merchant_id = :merchant_id::text AND endpoint_id = :endpoint_id::text
     ORDER BY id DESC LIMIT :limit::integer
""")

# By id alone (operators' CLI): the id index finds it in whichever partition.
_FIND_DELIVERY = Statement(f"""
    SELECT {_DELIVERY} FROM webhook_deliveries WHERE id = :delivery_id::text
""")

_REQUEUE_DELIVERY = Statement(f"""
    UPDATE webhook_deliveries AS d
       SET status = 'pending', next_attempt_at = now(), last_error = NULL,
           give_up_after = now() + make_interval(secs => :window_seconds::float8), updated_at = now()
      FROM webhook_endpoints AS w
     WHERE d.merchant_id = :merchant_id::text AND d.id = :delivery_id::text
       AND w.merchant_id = d.merchant_id AND w.id = d.endpoint_id AND w.deleted_at IS NULL
    RETURNING {_columns(Delivery, "d.")}
""")


def _delivery(row: Record | None) -> Delivery | None:
    return None if row is None else row_to(Delivery, row)


async def claim_due(connection: Connection, *, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries: each one's next attempt is pushed past the lease and its
    attempt count incremented, in the claiming statement."""
    rows = await _CLAIM_DUE.fetch(connection, limit=limit, lease_seconds=lease_seconds)
    return [
        ClaimedDelivery(
            delivery=row_to(Delivery, row),
            livemode=row["livemode"],
            event_type=row["event_type"],
            event_payload=row["event_payload"],
            event_created_at=row["event_created_at"],
            event_sequence=row["event_sequence"],
            url=row["url"],
            secret_ciphertext=row["secret_ciphertext"],
            previous_secret_ciphertext=row["previous_secret_ciphertext"],
            previous_secret_expires_at=row["previous_secret_expires_at"],
        )
        for row in rows
    ]


async def mark_delivered(connection: Connection, merchant_id: str, delivery_id: str, status_code: int) -> bool:
    """The endpoint took it (2xx). Whoever sent it, a pending delivery is done."""
    updated = await _MARK_DELIVERED.execute(
        connection, merchant_id=merchant_id, delivery_id=delivery_id, status_code=status_code
    )
    return updated > 0


async def mark_failed_attempt(
    connection: Connection,
    merchant_id: str,
    delivery_id: str,
    *,
    attempts: int,
    status_code: int | None,
    error: str,
    next_attempt_at: datetime | None,
) -> str | None:
    """Record a failed attempt: schedule the next one, or dead-letter (``failed``) when
    ``next_attempt_at`` is None. Only the current claimant (same attempt count) may write. Returns
    the new status, or None when the delivery was no longer this claimant's."""
    status = await _MARK_FAILED_ATTEMPT.fetchval(
        connection,
        merchant_id=merchant_id,
        delivery_id=delivery_id,
        attempts=attempts,
        status_code=status_code,
        error=error[:500],
        next_attempt_at=next_attempt_at,
    )
    return None if status is None else str(status)


async def list_deliveries(connection: Connection, merchant_id: str, endpoint_id: str, *, limit: int) -> list[Delivery]:
    rows = await _LIST_DELIVERIES.fetch(connection, merchant_id=merchant_id, endpoint_id=endpoint_id, limit=limit)
    return [row_to(Delivery, row) for row in rows]


async def find_delivery(connection: Connection, delivery_id: str) -> Delivery | None:
    """By id alone (operators' CLI): the id index finds it in whichever partition."""
    return _delivery(await _FIND_DELIVERY.fetchrow(connection, delivery_id=delivery_id))


async def requeue_delivery(
    connection: Connection, merchant_id: str, delivery_id: str, *, retry_window_seconds: float
) -> Delivery | None:
    """Send again now, with a fresh retry window, whatever its state (a live endpoint only)."""
    row = await _REQUEUE_DELIVERY.fetchrow(
        connection, merchant_id=merchant_id, delivery_id=delivery_id, window_seconds=retry_window_seconds
    )
    return _delivery(row)


# -- inbound gateway notifications ----------------------------------------------------------------

NOTIFICATION_LIMITS = {"event_id": 255, "kind": 128, "attempt_id": 255, "reference": 255}
"""The most characters each ``gateway_notifications`` column takes (``event_id`` by its check)."""
EXTRA_VALUE_LIMIT = 1000
"""The most characters of a notification's other fields (a dispute's id, a gateway's reason)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unstorable(value: str, limit: int) -> str | None:
    """Why ``value`` cannot be stored as a notification's field (too long, a NUL or another control
    character, a lone surrogate that is no UTF-8); None when it can."""
    if len(value) > limit:
        return f"is longer than {limit} characters"
    if _CONTROL.search(value) is not None:
        return "holds a control character"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode"
    return None


_RECORD_NOTIFICATION = Statement("""
    INSERT INTO gateway_notifications (gateway, event_id, kind, attempt_id, reference, outcome)
    VALUES (:gateway::text, :event_id::text, :kind::text, :attempt_id::text, :reference::text, :outcome::text)
    ON CONFLICT (gateway, event_id) DO NOTHING
""")

_SET_NOTIFICATION_OUTCOME = Statement("""
    UPDATE gateway_notifications SET outcome = :outcome::text
     WHERE gateway = :gateway::text AND event_id = :event_id::text
""")

_FORGET_NOTIFICATION = Statement("""
    DELETE FROM gateway_notifications WHERE gateway = :gateway::text AND event_id = :event_id::text
""")


async def record_notification(
    connection: Connection,
    *,
    gateway: str,
    event_id: str,
    kind: str,
    attempt_id: str | None,
    reference: str | None,
    outcome: str,
) -> bool:
    """Remember a gateway's event id; False if it was already seen (a duplicate delivery)."""
    inserted = await _RECORD_NOTIFICATION.execute(
        connection,
        gateway=gateway,
        event_id=event_id,
        kind=kind,
        attempt_id=attempt_id,
        reference=reference,
        outcome=outcome,
    )
    return inserted == 1


async def set_notification_outcome(connection: Connection, gateway: str, event_id: str, outcome: str) -> None:
    await _SET_NOTIFICATION_OUTCOME.execute(connection, gateway=gateway, event_id=event_id, outcome=outcome)


async def forget_notification(connection: Connection, gateway: str, event_id: str) -> None:
    """Applying it failed: let the gateway's own retry be applied."""
    await _FORGET_NOTIFICATION.execute(connection, gateway=gateway, event_id=event_id)
