"""Repository for the audit outbox, the hash chain and the per-sink cursors (migration 0002_audit).

The only SQL the audit trail runs. Functions take a session or connection and never commit: the
caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from payorch.storage.sql import Connection, Statement

metadata = MetaData()

audit_outbox = Table(
    "audit_outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False, unique=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("merchant_id", Text),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("outbox_seq", BigInteger, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Column("canonical", Text, nullable=False),
    Column("chained_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

audit_sink_cursors = Table(
    "audit_sink_cursors",
    metadata,
    Column("sink", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    occurred_at: dt.datetime
    payload: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ChainRow:
    seq: int
    event_id: str
    prev_hash: str
    hash: str
    canonical: str
    recorded_at: dt.datetime


async def insert_outbox(
    session: AsyncSession,
    *,
    event_id: str,
    occurred_at: dt.datetime,
    merchant_id: str | None,
    payload: Mapping[str, Any],
) -> int:
    """Add one (already redacted) event to the outbox; returns its outbox seq."""
    result = await session.execute(
        insert(audit_outbox)
        .values(event_id=event_id, occurred_at=occurred_at, merchant_id=merchant_id, payload=dict(payload))
        .returning(audit_outbox.c.seq)
    )
    return int(result.scalar_one())


async def insert_outbox_many(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add several (already redacted) events in one multi-row INSERT: one round trip per transaction
    however many events it records. Keys: ``event_id``, ``occurred_at``, ``merchant_id``, ``payload``."""
    if rows:
        # Parameters as a list (executemany) rather than ``.values([...])``: SQLAlchemy still sends one
        # multi-row INSERT, but compiles it once and caches it; a multi-VALUES construct has no cache
        # key and was compiled afresh on every charge (docs/benchmarks.md).
        await session.execute(insert(audit_outbox), [dict(row) for row in rows])


OutboxColumns = tuple[list[str], list[dt.datetime], list[str | None], list[str]]
"""Redacted audit events as column arrays: ids, times, merchants, payloads as JSON text."""


def outbox_insert_sql(first: int, condition: str = "true") -> str:
    """A data-modifying CTE body that adds audit events to the outbox inside a larger statement, in
    that statement's transaction. Its parameters, from ``$first`` on: event ids (text[]), times
    (timestamptz[]), merchants (text[]), redacted payloads as JSON text (text[]), and whether each
    event is written only when ``condition`` holds (boolean[]; the others are written regardless).
    Their order is kept: outbox ``seq`` and so chain order follow the arrays."""
    ids, times, merchants, payloads, conditional = (f"${first + n}" for n in range(5))
    return f"""
        INSERT INTO audit_outbox (event_id, occurred_at, merchant_id, payload)
        SELECT e.event_id, e.occurred_at, e.merchant_id, CAST(e.payload AS jsonb)
          FROM unnest({ids}::text[], {times}::timestamptz[], {merchants}::text[], {payloads}::text[],
                      {conditional}::boolean[])
               WITH ORDINALITY AS e(event_id, occurred_at, merchant_id, payload, conditional, ord)
         WHERE NOT e.conditional OR ({condition})
         ORDER BY e.ord
        """


async def count_outbox(session: AsyncSession, *, event_id: str | None = None) -> int:
    stmt = select(func.count()).select_from(audit_outbox)
    if event_id is not None:
        stmt = stmt.where(audit_outbox.c.event_id == event_id)
    return int((await session.execute(stmt)).scalar_one())


async def fetch_unchained(session: AsyncSession, limit: int) -> list[OutboxRow]:
    """Committed outbox rows in outbox order. A row whose transaction commits later than a row with a
    higher seq is simply taken in a later round: nothing is skipped for good."""
    rows = await session.execute(
        select(
            audit_outbox.c.seq,
            audit_outbox.c.event_id,
            audit_outbox.c.occurred_at,
            audit_outbox.c.payload,
            audit_outbox.c.created_at,
        )
        .order_by(audit_outbox.c.seq)
        .limit(limit)
    )
    return [OutboxRow(r.seq, r.event_id, r.occurred_at, r.payload, r.created_at) for r in rows]


async def chain_tip(session: AsyncSession) -> tuple[int, str | None]:
    """(last seq, its hash), or (0, None) for an empty chain. Locks the tip row so two chainers
    cannot both extend it."""
    row = (
        await session.execute(
            select(audit_chain.c.seq, audit_chain.c.hash).order_by(audit_chain.c.seq.desc()).limit(1).with_for_update()
        )
    ).first()
    return (0, None) if row is None else (int(row.seq), str(row.hash))


async def append_chain(session: AsyncSession, links: Sequence[Mapping[str, Any]]) -> None:
    """Insert chain rows (keys as the ``audit_chain`` columns) and remove their outbox rows."""
    if not links:
        return
    await session.execute(insert(audit_chain), [dict(link) for link in links])
    await session.execute(
        delete(audit_outbox).where(audit_outbox.c.seq.in_(bindparam("seqs", expanding=True))),
        {"seqs": [link["outbox_seq"] for link in links]},
    )


async def chain_after(session: AsyncSession, after_seq: int, limit: int) -> list[ChainRow]:
    rows = await session.execute(
        select(
            audit_chain.c.seq,
            audit_chain.c.event_id,
            audit_chain.c.prev_hash,
            audit_chain.c.hash,
            audit_chain.c.canonical,
            audit_chain.c.recorded_at,
        )
        .where(audit_chain.c.seq > after_seq)
        .order_by(audit_chain.c.seq)
        .limit(limit)
    )
    return [ChainRow(r.seq, r.event_id, r.prev_hash, r.hash, r.canonical, r.recorded_at) for r in rows]


async def chain_hashes(session: AsyncSession, first_seq: int = 1, last_seq: int | None = None) -> dict[int, str]:
    """seq -> hash as the database recorded them: the anchor ``verify`` compares a sink against."""
    stmt = select(audit_chain.c.seq, audit_chain.c.hash).where(audit_chain.c.seq >= first_seq)
    if last_seq is not None:
        stmt = stmt.where(audit_chain.c.seq <= last_seq)
    return {int(r.seq): str(r.hash) for r in await session.execute(stmt)}


async def ensure_cursors(session: AsyncSession, sinks: Sequence[str]) -> None:
    if sinks:
        stmt = pg_insert(audit_sink_cursors).values([{"sink": name} for name in sinks])
        await session.execute(stmt.on_conflict_do_nothing(index_elements=["sink"]))


async def get_cursors(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(select(audit_sink_cursors.c.sink, audit_sink_cursors.c.last_seq))
    return {str(r.sink): int(r.last_seq) for r in rows}


async def advance_cursor(session: AsyncSession, sink: str, *, from_seq: int, to_seq: int) -> bool:
    """Compare-and-set: move ``sink``'s cursor from ``from_seq`` to ``to_seq``. False when another
    shipper moved it first."""
    result = await session.execute(
        update(audit_sink_cursors)
        .where(audit_sink_cursors.c.sink == sink, audit_sink_cursors.c.last_seq == from_seq)
        .values(last_seq=to_seq, updated_at=func.now())
    )
    return bool(getattr(result, "rowcount", 0) == 1)


async def oldest_unshipped(session: AsyncSession, after_seq: int) -> dt.datetime | None:
    """When the oldest event not yet shipped past ``after_seq`` was recorded (chained or not)."""
    chained = select(func.min(audit_chain.c.recorded_at)).where(audit_chain.c.seq > after_seq).scalar_subquery()
    pending = select(func.min(audit_outbox.c.created_at)).scalar_subquery()
    value = (await session.execute(select(func.least(chained, pending)))).scalar_one()
    return value if isinstance(value, dt.datetime) else None


async def database_now(session: AsyncSession) -> dt.datetime:
    value = (await session.execute(select(func.now()))).scalar_one()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"now() returned {type(value).__name__}")
    return value


async def try_advisory_lock(connection: AsyncConnection, key: int) -> bool:
    """Session-level ``pg_try_advisory_lock``: held until unlocked or the connection closes."""
    result = await connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
    return bool(result.scalar_one())


async def advisory_unlock(connection: AsyncConnection, key: int) -> None:
    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})


async def ping(connection: AsyncConnection) -> None:
    await connection.execute(text("SELECT 1"))


def outbox_insert(condition: str = "true") -> str:
    """A data-modifying CTE body that adds audit events to the outbox inside a larger statement, in
    that statement's transaction. Its named parameters: ``audit_ids`` (text[]), ``audit_times``
    (timestamptz[]), ``audit_merchants`` (text[]), ``audit_payloads`` (redacted JSON text, text[])
    and ``audit_conditional`` (boolean[]: each event flagged there is written only when
    ``condition`` holds; the others regardless). Their order is kept: outbox ``seq``, and so chain
    order, follows the arrays (``audit.events.outbox_params`` builds them)."""
    return f"""
        INSERT INTO audit_outbox (event_id, occurred_at, merchant_id, payload)
        SELECT e.event_id, e.occurred_at, e.merchant_id, CAST(e.payload AS jsonb)
          FROM unnest(:audit_ids::text[], :audit_times::timestamptz[], :audit_merchants::text[],
                      :audit_payloads::text[], :audit_conditional::boolean[])
               WITH ORDINALITY AS e(event_id, occurred_at, merchant_id, payload, conditional, ord)
         WHERE NOT e.conditional OR ({condition})
         ORDER BY e.ord"""


_RECORD_EVENTS = Statement(f"WITH o AS ({outbox_insert()}) SELECT 1")


async def record_events(connection: Connection, audit: dict[str, list[Any]]) -> None:
    """Add events (``audit.events.outbox_params``) to the outbox in one statement, in the caller's
    transaction."""
    await _RECORD_EVENTS.fetchval(connection, **audit)
