"""Merchants and their API keys: the only SQL for both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.storage.tables import api_keys, merchants


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    merchant_id: str
    lookup: str
    secret_hash: bytes
    mode: str
    scopes: tuple[str, ...]
    revoked_at: datetime | None


async def insert_merchant(session: AsyncSession, merchant_id: str, name: str) -> Merchant:
    row = (await session.execute(insert(merchants).values(id=merchant_id, name=name).returning(merchants))).one()
    return Merchant(id=row.id, name=row.name, created_at=row.created_at)


async def get_merchant(session: AsyncSession, merchant_id: str) -> Merchant | None:
    row = (await session.execute(select(merchants).where(merchants.c.id == merchant_id))).one_or_none()
    return None if row is None else Merchant(id=row.id, name=row.name, created_at=row.created_at)


async def first_merchant(session: AsyncSession) -> Merchant | None:
    row = (await session.execute(select(merchants).order_by(merchants.c.id).limit(1))).one_or_none()
    return None if row is None else Merchant(id=row.id, name=row.name, created_at=row.created_at)


async def insert_api_key(
    session: AsyncSession,
    *,
    key_id: str,
    merchant_id: str,
    lookup: str,
    secret_hash: bytes,
    mode: str,
    scopes: tuple[str, ...],
) -> None:
    await session.execute(
        insert(api_keys).values(
            id=key_id,
            merchant_id=merchant_id,
            lookup=lookup,
            secret_hash=secret_hash,
            mode=mode,
            scopes=list(scopes),
        )
    )


async def find_api_key(session: AsyncSession, lookup: str) -> ApiKeyRecord | None:
    row = (await session.execute(select(api_keys).where(api_keys.c.lookup == lookup))).one_or_none()
    if row is None:
        return None
    return ApiKeyRecord(
        id=row.id,
        merchant_id=row.merchant_id,
        lookup=row.lookup,
        secret_hash=bytes(row.secret_hash),
        mode=row.mode,
        scopes=tuple(row.scopes),
        revoked_at=row.revoked_at,
    )


async def revoke_api_key(session: AsyncSession, key_id: str) -> str | None:
    """Revoke a key; returns its merchant id, or None if there is no such active key."""
    result = await session.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=func.now())
        .returning(api_keys.c.merchant_id)
    )
    merchant_id: str | None = result.scalar_one_or_none()
    return merchant_id


async def touch_api_key(session: AsyncSession, key_id: str) -> None:
    await session.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=func.now()))
