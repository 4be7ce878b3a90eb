"""Webhook endpoints, their deliveries (the outbox), and inbound gateway notifications.

Deliveries are claimed with a lease (``FOR UPDATE SKIP LOCKED``, then ``next_attempt_at`` pushed past
the delivery's timeout): several dispatchers never send one delivery at once, and a dispatcher that
dies mid-delivery only delays it until its lease runs out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession


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
    url: str
    secret_ciphertext: bytes
    previous_secret_ciphertext: bytes | None
    previous_secret_expires_at: datetime | None


def _fields(cls: Any, row: Row[Any]) -> Any:
    mapping = row._mapping
    return cls(**{name: mapping[name] for name in cls.__slots__})


# -- endpoints ------------------------------------------------------------------------------------


async def insert_endpoint(
    session: AsyncSession,
    *,
    endpoint_id: str,
    merchant_id: str,
    livemode: bool,
    url: str,
    enabled_events: list[str],
    description: str | None,
    secret_ciphertext: bytes,
) -> Endpoint:
    result = await session.execute(
        text(
            """
            INSERT INTO webhook_endpoints (id, merchant_id, livemode, url, enabled_events, description,
                                           secret_ciphertext)
            VALUES (:id, :merchant_id, :livemode, :url, :enabled_events, :description, :secret)
            RETURNING *
            """
        ),
        {
            "id": endpoint_id,
            "merchant_id": merchant_id,
            "livemode": livemode,
            "url": url,
            "enabled_events": enabled_events,
            "description": description,
            "secret": secret_ciphertext,
        },
    )
    endpoint: Endpoint = _fields(Endpoint, result.one())
    return endpoint


async def count_endpoints(session: AsyncSession, merchant_id: str, livemode: bool) -> int:
    result = await session.execute(
        text(
            "SELECT count(*) FROM webhook_endpoints "
            "WHERE merchant_id = :merchant_id AND livemode = :livemode AND deleted_at IS NULL"
        ),
        {"merchant_id": merchant_id, "livemode": livemode},
    )
    return int(result.scalar_one())


async def list_endpoints(session: AsyncSession, merchant_id: str, livemode: bool) -> list[Endpoint]:
    """Newest first."""
    result = await session.execute(
        text(
            "SELECT * FROM webhook_endpoints WHERE merchant_id = :merchant_id AND livemode = :livemode "
            "AND deleted_at IS NULL ORDER BY id DESC"
        ),
        {"merchant_id": merchant_id, "livemode": livemode},
    )
    return [_fields(Endpoint, row) for row in result.all()]


async def get_endpoint(
    session: AsyncSession, merchant_id: str, livemode: bool, endpoint_id: str, *, for_update: bool = False
) -> Endpoint | None:
    query = (
        "SELECT * FROM webhook_endpoints WHERE merchant_id = :merchant_id AND livemode = :livemode "
        "AND id = :id AND deleted_at IS NULL"
    )
    result = await session.execute(
        text(query + " FOR UPDATE" if for_update else query),
        {"merchant_id": merchant_id, "livemode": livemode, "id": endpoint_id},
    )
    row = result.one_or_none()
    return None if row is None else _fields(Endpoint, row)


async def delete_endpoint(session: AsyncSession, merchant_id: str, endpoint_id: str) -> int:
    """Soft-delete the endpoint (its deliveries stay readable) and cancel what it still had queued.
    Returns how many deliveries were canceled."""
    await session.execute(
        text(
            "UPDATE webhook_endpoints SET deleted_at = now() "
            "WHERE merchant_id = :merchant_id AND id = :id AND deleted_at IS NULL"
        ),
        {"merchant_id": merchant_id, "id": endpoint_id},
    )
    result = await session.execute(
        text(
            "UPDATE webhook_deliveries SET status = 'canceled', next_attempt_at = NULL, updated_at = now() "
            "WHERE merchant_id = :merchant_id AND endpoint_id = :id AND status = 'pending'"
        ),
        {"merchant_id": merchant_id, "id": endpoint_id},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def rotate_secret(
    session: AsyncSession,
    merchant_id: str,
    endpoint_id: str,
    *,
    secret_ciphertext: bytes,
    previous_secret_ciphertext: bytes,
    previous_expires_at: datetime,
) -> Endpoint | None:
    result = await session.execute(
        text(
            """
            UPDATE webhook_endpoints
               SET secret_ciphertext = :secret, previous_secret_ciphertext = :previous,
                   previous_secret_expires_at = :expires_at
             WHERE merchant_id = :merchant_id AND id = :id AND deleted_at IS NULL
            RETURNING *
            """
        ),
        {
            "merchant_id": merchant_id,
            "id": endpoint_id,
            "secret": secret_ciphertext,
            "previous": previous_secret_ciphertext,
            "expires_at": previous_expires_at,
        },
    )
    row = result.one_or_none()
    return None if row is None else _fields(Endpoint, row)


# -- deliveries -----------------------------------------------------------------------------------


async def claim_due(session: AsyncSession, *, limit: int, lease_seconds: float) -> list[ClaimedDelivery]:
    """Lease up to ``limit`` due deliveries: each one's next attempt is pushed past the lease and its
    attempt count incremented, in the claiming transaction."""
    result = await session.execute(
        text(
            """
            WITH due AS (
                SELECT merchant_id, id FROM webhook_deliveries
                 WHERE status = 'pending' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at
                 LIMIT :limit
                 FOR UPDATE SKIP LOCKED
            )
            UPDATE webhook_deliveries AS d
               SET next_attempt_at = now() + make_interval(secs => :lease), attempts = d.attempts + 1,
                   updated_at = now()
              FROM due, events AS e, webhook_endpoints AS w
             WHERE d.merchant_id = due.merchant_id AND d.id = due.id
               AND e.merchant_id = d.merchant_id AND e.id = d.event_id
               AND w.merchant_id = d.merchant_id AND w.id = d.endpoint_id
            RETURNING d.*, e.livemode, e.type AS event_type, e.payload AS event_payload,
                      e.created_at AS event_created_at, w.url, w.secret_ciphertext,
                      w.previous_secret_ciphertext, w.previous_secret_expires_at
            """
        ),
        {"limit": limit, "lease": lease_seconds},
    )
    claimed = []
    for row in result.all():
        mapping = row._mapping
        claimed.append(
            ClaimedDelivery(
                delivery=_fields(Delivery, row),
                livemode=mapping["livemode"],
                event_type=mapping["event_type"],
                event_payload=mapping["event_payload"],
                event_created_at=mapping["event_created_at"],
                url=mapping["url"],
                secret_ciphertext=mapping["secret_ciphertext"],
                previous_secret_ciphertext=mapping["previous_secret_ciphertext"],
                previous_secret_expires_at=mapping["previous_secret_expires_at"],
            )
        )
    return claimed


async def mark_delivered(session: AsyncSession, merchant_id: str, delivery_id: str, status_code: int) -> bool:
    """The endpoint took it (2xx). Whoever sent it, a pending delivery is done."""
    result = await session.execute(
        text(
            """
            UPDATE webhook_deliveries
               SET status = 'succeeded', delivered_at = now(), next_attempt_at = NULL, last_status_code = :code,
                   last_error = NULL, updated_at = now()
             WHERE merchant_id = :merchant_id AND id = :id AND status = 'pending'
            """
        ),
        {"merchant_id": merchant_id, "id": delivery_id, "code": status_code},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def mark_failed_attempt(
    session: AsyncSession,
    merchant_id: str,
    delivery_id: str,
    *,
    attempts: int,
    status_code: int | None,
    error: str,
    next_attempt_at: datetime | None,
) -> str | None:
    """Record a failed attempt: schedule the next one, or dead-letter (``failed``) when
    ``next_attempt_at`` is None. Only the current claimant (same attempt count) may write: a
    dispatcher whose lease ran out must not reschedule another's attempt. Returns the new status."""
    result = await session.execute(
        text(
            """
            UPDATE webhook_deliveries
               SET status = CASE WHEN CAST(:next_at AS timestamptz) IS NULL THEN 'failed' ELSE 'pending' END,
                   next_attempt_at = :next_at, last_status_code = :code, last_error = :error, updated_at = now()
             WHERE merchant_id = :merchant_id AND id = :id AND status = 'pending' AND attempts = :attempts
            RETURNING status
            """
        ),
        {
            "merchant_id": merchant_id,
            "id": delivery_id,
            "attempts": attempts,
            "code": status_code,
            "error": error[:500],
            "next_at": next_attempt_at,
        },
    )
    status = result.scalar_one_or_none()
    return None if status is None else str(status)


async def list_deliveries(session: AsyncSession, merchant_id: str, endpoint_id: str, *, limit: int) -> list[Delivery]:
    result = await session.execute(
        text(
            "SELECT * FROM webhook_deliveries WHERE merchant_id = :merchant_id AND endpoint_id = :endpoint_id "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {"merchant_id": merchant_id, "endpoint_id": endpoint_id, "limit": limit},
    )
    return [_fields(Delivery, row) for row in result.all()]


async def find_delivery(session: AsyncSession, delivery_id: str) -> Delivery | None:
    """By id alone (operators' CLI): the id index finds it in whichever partition."""
    result = await session.execute(text("SELECT * FROM webhook_deliveries WHERE id = :id"), {"id": delivery_id})
    row = result.one_or_none()
    return None if row is None else _fields(Delivery, row)


async def requeue_delivery(
    session: AsyncSession, merchant_id: str, delivery_id: str, *, retry_window_seconds: float
) -> Delivery | None:
    """Send again now, with a fresh retry window, whatever its state (a live endpoint only)."""
    result = await session.execute(
        text(
            """
            UPDATE webhook_deliveries AS d
               SET status = 'pending', next_attempt_at = now(), last_error = NULL,
                   give_up_after = now() + make_interval(secs => :window), updated_at = now()
              FROM webhook_endpoints AS w
             WHERE d.merchant_id = :merchant_id AND d.id = :id
               AND w.merchant_id = d.merchant_id AND w.id = d.endpoint_id AND w.deleted_at IS NULL
            RETURNING d.*
            """
        ),
        {"merchant_id": merchant_id, "id": delivery_id, "window": retry_window_seconds},
    )
    row = result.one_or_none()
    return None if row is None else _fields(Delivery, row)


# -- inbound gateway notifications ----------------------------------------------------------------


async def record_notification(
    session: AsyncSession,
    *,
    gateway: str,
    event_id: str,
    kind: str,
    attempt_id: str | None,
    reference: str | None,
    outcome: str,
) -> bool:
    """Remember a gateway's event id; False if it was already seen (a duplicate delivery)."""
    result = await session.execute(
        text(
            """
            INSERT INTO gateway_notifications (gateway, event_id, kind, attempt_id, reference, outcome)
            VALUES (:gateway, :event_id, :kind, :attempt_id, :reference, :outcome)
            ON CONFLICT (gateway, event_id) DO NOTHING
            RETURNING 1
            """
        ),
        {
            "gateway": gateway,
            "event_id": event_id,
            "kind": kind,
            "attempt_id": attempt_id,
            "reference": reference,
            "outcome": outcome,
        },
    )
    return result.scalar_one_or_none() is not None


async def set_notification_outcome(session: AsyncSession, gateway: str, event_id: str, outcome: str) -> None:
    await session.execute(
        text("UPDATE gateway_notifications SET outcome = :outcome WHERE gateway = :gateway AND event_id = :event_id"),
        {"gateway": gateway, "event_id": event_id, "outcome": outcome},
    )


async def forget_notification(session: AsyncSession, gateway: str, event_id: str) -> None:
    """Applying it failed: let the gateway's own retry be applied."""
    await session.execute(
        text("DELETE FROM gateway_notifications WHERE gateway = :gateway AND event_id = :event_id"),
        {"gateway": gateway, "event_id": event_id},
    )
