"""Idempotency keys (DESIGN.md section 6): the only SQL for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.storage.tables import idempotency_keys


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    merchant_id: str
    key: str
    fingerprint: bytes
    status: str
    charge_id: str | None
    response_status: int | None
    response_body: bytes | None
    locked_at: datetime


async def try_take(
    session: AsyncSession,
    *,
    merchant_id: str,
    key: str,
    fingerprint: bytes,
    method: str,
    path: str,
    charge_id: str | None = None,
) -> bool:
    """Take the key for this request (naming the object it will create, if known). False if it
    already exists (waits for a concurrent taker to end)."""
    result = await session.execute(
        insert(idempotency_keys)
        .values(
            merchant_id=merchant_id,
            key=key,
            fingerprint=fingerprint,
            request_method=method,
            request_path=path,
            status="in_progress",
            charge_id=charge_id,
        )
        .on_conflict_do_nothing(index_elements=["merchant_id", "key"])
        .returning(idempotency_keys.c.key)
    )
    return result.scalar_one_or_none() is not None


async def get(
    session: AsyncSession, merchant_id: str, key: str, *, for_update: bool = False
) -> IdempotencyRecord | None:
    query = select(idempotency_keys).where(idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).one_or_none()
    if row is None:
        return None
    return IdempotencyRecord(
        merchant_id=row.merchant_id,
        key=row.key,
        fingerprint=bytes(row.fingerprint),
        status=row.status,
        charge_id=row.charge_id,
        response_status=row.response_status,
        response_body=None if row.response_body is None else bytes(row.response_body),
        locked_at=row.locked_at,
    )


async def relock(session: AsyncSession, merchant_id: str, key: str) -> None:
    """A request takes over a key abandoned by a request that died."""
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key)
        .values(locked_at=func.now())
    )


async def attach_charge(session: AsyncSession, merchant_id: str, key: str, charge_id: str) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key)
        .values(charge_id=charge_id)
    )


async def complete(
    session: AsyncSession, merchant_id: str, key: str, *, status: int, body: bytes, charge_id: str | None
) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.merchant_id == merchant_id, idempotency_keys.c.key == key)
        .values(
            status="completed",
            response_status=status,
            response_body=body,
            completed_at=func.now(),
            charge_id=func.coalesce(charge_id, idempotency_keys.c.charge_id),
        )
    )


async def release(session: AsyncSession, merchant_id: str, key: str) -> None:
    """Forget a key whose request ended before anything was executed (so a retry runs afresh)."""
    await session.execute(
        delete(idempotency_keys).where(
            idempotency_keys.c.merchant_id == merchant_id,
            idempotency_keys.c.key == key,
            idempotency_keys.c.status == "in_progress",
        )
    )


async def find_in_progress_for_charge(session: AsyncSession, merchant_id: str, charge_id: str) -> str | None:
    query = select(idempotency_keys.c.key).where(
        idempotency_keys.c.merchant_id == merchant_id,
        idempotency_keys.c.charge_id == charge_id,
        idempotency_keys.c.status == "in_progress",
    )
    key: str | None = (await session.execute(query)).scalar_one_or_none()
    return key


async def purge_older_than(session: AsyncSession, hours: int, *, batch: int = 5000) -> int:
    """Delete keys older than ``hours`` (in batches, so a large purge never holds long locks)."""
    result = await session.execute(
        text(
            """
            DELETE FROM idempotency_keys WHERE (merchant_id, key) IN (
                SELECT merchant_id, key FROM idempotency_keys
                WHERE created_at < now() - make_interval(hours => :hours) LIMIT :batch
            )
            """
        ),
        {"hours": hours, "batch": batch},
    )
    return int(getattr(result, "rowcount", 0) or 0)
