"""Refunds: the only SQL for them. Every query on one merchant's refunds filters on ``merchant_id``,
so the planner prunes to one hash partition. A succeeded refund's amount is counted on its charge
in the same statement, through the charge repository's fragment (``charge_writes.ADD_REFUNDED``)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payorch.storage.audit import outbox_insert
from payorch.storage.charge_writes import ADD_REFUNDED
from payorch.storage.idempotency import complete_key
from payorch.storage.sql import Connection, Statement, row_to


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    merchant_id: str
    charge_id: str
    livemode: bool
    amount: int
    currency: str
    status: str
    reason: str | None
    gateway: str
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewRefund:
    id: str
    merchant_id: str
    charge_id: str
    livemode: bool
    amount: int
    currency: str
    reason: str | None
    gateway: str
    metadata: dict[str, str]


_COLUMNS = ", ".join(f.name for f in fields(Refund))

_INSERT = Statement(
    f"""
    WITH r AS (
        INSERT INTO refunds (id, merchant_id, charge_id, livemode, amount, currency, status, reason, gateway, metadata)
        VALUES (:id::text, :merchant_id::text, :charge_id::text, :livemode::boolean, :amount::bigint,
                :currency::text, 'pending', :reason::text, :gateway::text, :metadata::jsonb)
        RETURNING {_COLUMNS}
    ), o AS ({outbox_insert()})
    SELECT {_COLUMNS} FROM r
    """
)

_GET = Statement(
    f"""
    SELECT {_COLUMNS} FROM refunds
     WHERE merchant_id = :merchant_id::text AND id = :id::text
       AND (:livemode::boolean IS NULL OR livemode = :livemode::boolean)
    """
)

_COMMITTED = Statement(
    """
    SELECT coalesce(sum(amount), 0) FROM refunds
     WHERE merchant_id = :merchant_id::text AND charge_id = :charge_id::text AND status <> 'failed'
    """
)

_CLOSE = Statement(
    f"""
    WITH r AS (
        UPDATE refunds
           SET status = :status::text, gateway_reference = coalesce(:gateway_reference::text, gateway_reference),
               failure_code = :failure_code::text, failure_message = :failure_message::text,
               updated_at = :updated_at::timestamptz
         WHERE merchant_id = :merchant_id::text AND id = :refund_id::text AND status = :expected_status::text
        RETURNING {_COLUMNS}
    ), c AS ({ADD_REFUNDED.format(condition="EXISTS (SELECT 1 FROM r) AND :status::text = 'succeeded'")}),
    k AS ({complete_key("EXISTS (SELECT 1 FROM r) AND :final::boolean", "refund_id")}),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM r)")})
    SELECT {_COLUMNS} FROM r
    """
)

_LEASE_UNRESOLVED = Statement(
    f"""
    UPDATE refunds AS r
       SET updated_at = now() + make_interval(secs => :lease_seconds::double precision)
      FROM (SELECT merchant_id, id FROM refunds
             WHERE (status = 'pending' AND updated_at < :pending_before::timestamptz)
                OR (status = 'processing' AND updated_at < :processing_before::timestamptz)
             ORDER BY updated_at
             LIMIT :limit::integer
             FOR UPDATE SKIP LOCKED) AS due
     WHERE r.merchant_id = due.merchant_id AND r.id = due.id
    RETURNING {", ".join(f"r.{name}" for name in _COLUMNS.split(", "))}
    """
)

# A gateway's notification names its own refund id (or the payment's), never the merchant.
_BY_REFERENCE = Statement(
    f"""
    SELECT {_COLUMNS} FROM refunds
     WHERE gateway = :gateway::text AND gateway_reference = :reference::text AND status IN ('pending', 'processing')
    """
)


async def insert_refund(connection: Connection, new: NewRefund, audit: dict[str, list[Any]]) -> Refund:
    """Write a ``pending`` refund with its audit events: it exists before the gateway is asked, so a
    crash leaves it visible."""
    row = await _INSERT.fetchrow(connection, **{f.name: getattr(new, f.name) for f in fields(NewRefund)}, **audit)
    if row is None:
        raise RuntimeError("inserting a refund returned no row")
    return row_to(Refund, row)


async def get_refund(
    connection: Connection, merchant_id: str, refund_id: str, *, livemode: bool | None = None
) -> Refund | None:
    row = await _GET.fetchrow(connection, merchant_id=merchant_id, id=refund_id, livemode=livemode)
    return None if row is None else row_to(Refund, row)


async def committed_amount(connection: Connection, merchant_id: str, charge_id: str) -> int:
    """What the charge's refunds hold: succeeded ones and those still in flight (pending, processing).
    Read under the charge's row lock, so two refunds can never both take the same remainder."""
    return int(await _COMMITTED.fetchval(connection, merchant_id=merchant_id, charge_id=charge_id))


async def close_refund(
    connection: Connection,
    updated: Refund,
    *,
    expected_status: str,
    key: str | None,
    reply_status: int,
    reply_body: bytes,
    audit: dict[str, list[Any]],
) -> Refund | None:
    """Move a refund from ``expected_status`` to ``updated`` (its state as the caller rendered it);
    a succeeded one is counted on its charge, a final one's reply is stored for ``key``, and the
    conditional ``audit`` events written, all only if it moved. None: someone else (a concurrent
    resend) moved it first."""
    row = await _CLOSE.fetchrow(
        connection,
        merchant_id=updated.merchant_id,
        refund_id=updated.id,
        charge_id=updated.charge_id,
        refund_amount=updated.amount,
        expected_status=expected_status,
        status=updated.status,
        gateway_reference=updated.gateway_reference,
        failure_code=updated.failure_code,
        failure_message=updated.failure_message,
        updated_at=updated.updated_at,
        final=updated.status in ("succeeded", "failed"),
        key=key,
        reply_status=reply_status,
        reply_body=reply_body,
        **audit,
    )
    return None if row is None else row_to(Refund, row)


async def lease_unresolved(
    connection: Connection, *, limit: int, pending_before: datetime, processing_before: datetime, lease_seconds: float
) -> list[Refund]:
    """Claim refunds whose request died (``pending`` since before ``pending_before``) or whose gateway
    answer was unknown (``processing``, last tried before ``processing_before``). Each is leased by
    pushing its ``updated_at`` forward, so several workers never resend one refund at once."""
    rows = await _LEASE_UNRESOLVED.fetch(
        connection,
        limit=limit,
        pending_before=pending_before,
        processing_before=processing_before,
        lease_seconds=lease_seconds,
    )
    return [row_to(Refund, row) for row in rows]


async def unresolved_by_reference(connection: Connection, gateway: str, reference: str) -> list[Refund]:
    """Refunds still open at ``gateway`` under its ``reference``."""
    rows = await _BY_REFERENCE.fetch(connection, gateway=gateway, reference=reference)
    return [row_to(Refund, row) for row in rows]


_FOR_CHARGE = Statement(
    f"""
    SELECT {_COLUMNS} FROM refunds WHERE merchant_id = :merchant_id::text AND charge_id = :charge_id::text ORDER BY id
    """
)


async def list_for_charge(connection: Connection, merchant_id: str, charge_id: str) -> list[Refund]:
    """A charge's refunds, oldest first."""
    rows = await _FOR_CHARGE.fetch(connection, merchant_id=merchant_id, charge_id=charge_id)
    return [row_to(Refund, row) for row in rows]
