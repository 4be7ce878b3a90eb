"""The capture amount a charge has sent (or is about to send) to its gateway: the only SQL for it."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.storage.tables import charges


async def claim(session: AsyncSession, merchant_id: str, charge_id: str, amount: int) -> int | None:
    """Record ``amount`` as the charge's capture unless one is recorded already; return the recorded
    amount (``amount``, or the earlier one). None if the charge is no longer ``authorized``."""
    row = (
        await session.execute(
            update(charges)
            .where(charges.c.merchant_id == merchant_id, charges.c.id == charge_id, charges.c.status == "authorized")
            .values(capture_requested_amount=func.coalesce(charges.c.capture_requested_amount, amount))
            .returning(charges.c.capture_requested_amount)
        )
    ).one_or_none()
    return None if row is None else int(row.capture_requested_amount)


async def release(session: AsyncSession, merchant_id: str, charge_id: str, amount: int) -> None:
    """Forget a capture the gateway provably did not perform, so another amount may be tried."""
    await session.execute(
        update(charges)
        .where(
            charges.c.merchant_id == merchant_id,
            charges.c.id == charge_id,
            charges.c.status == "authorized",
            charges.c.capture_requested_amount == amount,
        )
        .values(capture_requested_amount=None)
    )
