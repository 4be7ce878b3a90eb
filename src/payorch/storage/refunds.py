"""Refunds: the only SQL for them, and for the refunded total they add to their charge. Every query
filters on ``merchant_id`` so the planner prunes to one hash partition."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.storage.tables import charges, refunds


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


def _refund(row: Row[Any]) -> Refund:
    mapping = row._mapping
    return Refund(**{name: mapping[name] for name in Refund.__slots__})


async def insert_refund(session: AsyncSession, new: NewRefund) -> Refund:
    """Write a ``pending`` refund: it exists before the gateway is asked, so a crash leaves it visible."""
    values = {name: getattr(new, name) for name in NewRefund.__slots__}
    row = (await session.execute(insert(refunds).values(status="pending", **values).returning(refunds))).one()
    return _refund(row)


async def get_refund(
    session: AsyncSession, merchant_id: str, refund_id: str, *, livemode: bool | None = None
) -> Refund | None:
    query = select(refunds).where(refunds.c.merchant_id == merchant_id, refunds.c.id == refund_id)
    if livemode is not None:
        query = query.where(refunds.c.livemode == livemode)
    row = (await session.execute(query)).one_or_none()
    return None if row is None else _refund(row)


async def committed_amount(session: AsyncSession, merchant_id: str, charge_id: str) -> int:
    """What the charge's refunds hold: succeeded ones and those still in flight (pending, processing).

    Called under the charge's row lock, so two refunds can never both take the same remainder."""
    query = select(func.coalesce(func.sum(refunds.c.amount), 0)).where(
        refunds.c.merchant_id == merchant_id, refunds.c.charge_id == charge_id, refunds.c.status != "failed"
    )
    return int((await session.execute(query)).scalar_one())


async def update_refund(
    session: AsyncSession, merchant_id: str, refund_id: str, *, expected_status: str, **values: Any
) -> Refund | None:
    """Change a refund only if it is still in ``expected_status``; None means someone else moved it."""
    row = (
        await session.execute(
            update(refunds)
            .where(refunds.c.merchant_id == merchant_id, refunds.c.id == refund_id, refunds.c.status == expected_status)
            .values(updated_at=func.now(), **values)
            .returning(refunds)
        )
    ).one_or_none()
    return None if row is None else _refund(row)


async def add_to_charge(session: AsyncSession, merchant_id: str, charge_id: str, amount: int) -> None:
    """Count a succeeded refund on its charge (in the same transaction as the refund's success)."""
    await session.execute(
        update(charges)
        .where(charges.c.merchant_id == merchant_id, charges.c.id == charge_id)
        .values(amount_refunded=charges.c.amount_refunded + amount, updated_at=func.now())
    )


async def lease_unresolved(
    session: AsyncSession, *, limit: int, pending_before: datetime, processing_before: datetime, lease_seconds: float
) -> list[Refund]:
    """Claim refunds whose request died (``pending`` since before ``pending_before``) or whose gateway
    answer was unknown (``processing``, last tried before ``processing_before``). Each is leased by
    pushing its ``updated_at`` forward, so several workers never resend one refund at once."""
    result = await session.execute(
        text(
            """
            UPDATE refunds AS r
               SET updated_at = now() + make_interval(secs => :lease)
              FROM (SELECT merchant_id, id FROM refunds
                     WHERE (status = 'pending' AND updated_at < :pending_before)
                        OR (status = 'processing' AND updated_at < :processing_before)
                     ORDER BY updated_at
                     LIMIT :limit
                     FOR UPDATE SKIP LOCKED) AS due
             WHERE r.merchant_id = due.merchant_id AND r.id = due.id
            RETURNING r.*
            """
        ),
        {
            "lease": lease_seconds,
            "pending_before": pending_before,
            "processing_before": processing_before,
            "limit": limit,
        },
    )
    return [_refund(r) for r in result.all()]
