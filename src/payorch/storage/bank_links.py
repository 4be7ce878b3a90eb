"""Bank links and their single-use OAuth states (migration 0005_bank_links): the only SQL for both.

``bank_links`` is hash-partitioned on merchant_id and every query on it names the merchant.
``bank_link_states`` is a small unpartitioned lookup keyed by the SHA-256 of ``state``: the browser
callback carries no API key, so the state's digest is how it finds the merchant and link, and its
primary key makes a digest globally unique. Functions flush, never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

metadata = MetaData()

bank_links = Table(
    "bank_links",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, primary_key=True),
    Column("livemode", Boolean, nullable=False),
    Column("user_reference", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("api_key_id", Text),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("secret_name", Text),
    Column("secret_version", Text),
    Column("secret_generation", Integer, nullable=False),
    Column("refresh_lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("linked_at", DateTime(timezone=True)),
    Column("refreshed_at", DateTime(timezone=True)),
)

bank_link_states = Table(
    "bank_link_states",
    metadata,
    Column("state_hash", LargeBinary, primary_key=True),
    Column("merchant_id", Text, nullable=False),
    Column("link_id", Text, nullable=False),
    Column("verifier_sealed", LargeBinary),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("consumed_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class BankLink:
    id: str
    merchant_id: str
    livemode: bool
    user_reference: str
    status: str
    scopes: tuple[str, ...]
    api_key_id: str | None
    expires_at: dt.datetime
    failure_code: str | None
    failure_message: str | None
    secret_name: str | None
    secret_version: str | None
    secret_generation: int
    created_at: dt.datetime
    updated_at: dt.datetime
    linked_at: dt.datetime | None
    refreshed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ConsumedState:
    merchant_id: str
    link_id: str
    verifier_sealed: bytes | None
    expired: bool


_LINK_COLUMNS = [c for c in bank_links.c if c.name != "refresh_lease_until"]


def _link(row: object) -> BankLink:
    values = {c.name: getattr(row, c.name) for c in _LINK_COLUMNS}
    values["scopes"] = tuple(values["scopes"] or ())
    return BankLink(**values)


async def insert_link(
    session: AsyncSession,
    *,
    link_id: str,
    merchant_id: str,
    livemode: bool,
    user_reference: str,
    scopes: Sequence[str],
    api_key_id: str | None,
    state_hash: bytes,
    verifier_sealed: bytes,
    ttl: dt.timedelta,
) -> BankLink:
    """A pending link and its state, both expiring ``ttl`` from the database's clock."""
    expires_at = func.now() + ttl
    row = (
        await session.execute(
            insert(bank_links)
            .values(
                id=link_id,
                merchant_id=merchant_id,
                livemode=livemode,
                user_reference=user_reference,
                status="pending",
                scopes=list(scopes),
                api_key_id=api_key_id,
                expires_at=expires_at,
                secret_generation=0,
            )
            .returning(*_LINK_COLUMNS)
        )
    ).one()
    link = _link(row)
    await session.execute(
        insert(bank_link_states).values(
            state_hash=state_hash,
            merchant_id=merchant_id,
            link_id=link_id,
            verifier_sealed=verifier_sealed,
            expires_at=link.expires_at,
        )
    )
    return link


async def consume_state(session: AsyncSession, state_hash: bytes) -> ConsumedState | None:
    """Mark an unused state used and return it; None when it is unknown or already used.

    One UPDATE guarded by ``consumed_at IS NULL``: of two concurrent callbacks with one state, the
    second blocks on the row lock, re-reads the row, sees it consumed and updates nothing.
    """
    row = (
        await session.execute(
            update(bank_link_states)
            .where(bank_link_states.c.state_hash == state_hash, bank_link_states.c.consumed_at.is_(None))
            .values(consumed_at=func.now())
            .returning(
                bank_link_states.c.merchant_id,
                bank_link_states.c.link_id,
                bank_link_states.c.verifier_sealed,
                (bank_link_states.c.expires_at <= func.now()).label("expired"),
            )
        )
    ).one_or_none()
    if row is None:
        return None
    # The sealed verifier is needed once, now: drop it from the row.
    await session.execute(
        update(bank_link_states).where(bank_link_states.c.state_hash == state_hash).values(verifier_sealed=None)
    )
    sealed = bytes(row.verifier_sealed) if row.verifier_sealed is not None else None
    return ConsumedState(row.merchant_id, row.link_id, sealed, bool(row.expired))


async def used_state(session: AsyncSession, state_hash: bytes) -> tuple[str, str] | None:
    """(merchant id, link id) of a state that was already consumed; None for an unknown one."""
    row = (
        await session.execute(
            select(bank_link_states.c.merchant_id, bank_link_states.c.link_id).where(
                bank_link_states.c.state_hash == state_hash, bank_link_states.c.consumed_at.is_not(None)
            )
        )
    ).one_or_none()
    return None if row is None else (str(row.merchant_id), str(row.link_id))


async def get_link(session: AsyncSession, merchant_id: str, link_id: str) -> BankLink | None:
    row = (
        await session.execute(
            select(*_LINK_COLUMNS).where(bank_links.c.merchant_id == merchant_id, bank_links.c.id == link_id)
        )
    ).one_or_none()
    return None if row is None else _link(row)


async def merchant_of(session: AsyncSession, link_id: str) -> str | None:
    """The merchant owning ``link_id``: the operator CLI's lookup, the one query across partitions."""
    row = (await session.execute(select(bank_links.c.merchant_id).where(bank_links.c.id == link_id))).first()
    return None if row is None else str(row.merchant_id)


async def mark_failed(
    session: AsyncSession,
    merchant_id: str,
    link_id: str,
    *,
    code: str,
    message: str,
    from_statuses: Sequence[str] = ("pending",),
) -> BankLink | None:
    """Fail a link that is in one of ``from_statuses``; None when it is not (nothing changes)."""
    row = (
        await session.execute(
            update(bank_links)
            .where(
                bank_links.c.merchant_id == merchant_id,
                bank_links.c.id == link_id,
                bank_links.c.status.in_(list(from_statuses)),
            )
            .values(
                status="failed",
                failure_code=code,
                failure_message=message,
                refresh_lease_until=None,
                updated_at=func.now(),
            )
            .returning(*_LINK_COLUMNS)
        )
    ).one_or_none()
    return None if row is None else _link(row)


async def mark_active(
    session: AsyncSession, merchant_id: str, link_id: str, *, secret_name: str, secret_version: str
) -> BankLink | None:
    row = (
        await session.execute(
            update(bank_links)
            .where(
                bank_links.c.merchant_id == merchant_id,
                bank_links.c.id == link_id,
                bank_links.c.status == "pending",
            )
            .values(
                status="active",
                secret_name=secret_name,
                secret_version=secret_version,
                secret_generation=1,
                linked_at=func.now(),
                updated_at=func.now(),
            )
            .returning(*_LINK_COLUMNS)
        )
    ).one_or_none()
    return None if row is None else _link(row)


async def take_refresh_lease(
    session: AsyncSession, merchant_id: str, link_id: str, lease: dt.timedelta
) -> BankLink | None:
    """Hold an active link for one refresh; None when it is not active or another refresh holds it."""
    row = (
        await session.execute(
            update(bank_links)
            .where(
                bank_links.c.merchant_id == merchant_id,
                bank_links.c.id == link_id,
                bank_links.c.status == "active",
                (bank_links.c.refresh_lease_until.is_(None)) | (bank_links.c.refresh_lease_until < func.now()),
            )
            .values(refresh_lease_until=func.now() + lease)
            .returning(*_LINK_COLUMNS)
        )
    ).one_or_none()
    return None if row is None else _link(row)


async def finish_refresh(
    session: AsyncSession,
    merchant_id: str,
    link_id: str,
    *,
    secret_version: str | None = None,
    secret_generation: int | None = None,
    refreshed: bool = True,
) -> BankLink | None:
    """Release the refresh lease; record the new secret version when the refresh token rotated."""
    values: dict[str, object] = {"refresh_lease_until": None, "updated_at": func.now()}
    if refreshed:
        values["refreshed_at"] = func.now()
    if secret_version is not None and secret_generation is not None:
        values["secret_version"] = secret_version
        values["secret_generation"] = secret_generation
    row = (
        await session.execute(
            update(bank_links)
            .where(bank_links.c.merchant_id == merchant_id, bank_links.c.id == link_id)
            .values(**values)
            .returning(*_LINK_COLUMNS)
        )
    ).one_or_none()
    return None if row is None else _link(row)
