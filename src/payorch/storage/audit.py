"""Repository for the audit outbox, the hash chain and the per-sink cursors (migration 0002_audit).

The only SQL the audit trail runs. Functions take a connection and never commit: the caller owns
the transaction. The outbox's insert is also a fragment (``outbox_insert``) that other repositories
compose into their own one-statement writes, so an action and its audit events share a statement.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from payorch.storage.sql import Connection, Statement, row_to


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    occurred_at: dt.datetime
    payload: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One position of the chain, as the shipper computed it for an outbox row."""

    seq: int
    event_id: str
    outbox_seq: int
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    prev_hash: str
    hash: str
    canonical: str


@dataclass(frozen=True, slots=True)
class ChainRow:
    seq: int
    event_id: str
    prev_hash: str
    hash: str
    canonical: str
    recorded_at: dt.datetime


OUTBOX_PARAMS = ("audit_event_ids", "audit_occurred_at", "audit_merchant_ids", "audit_payloads", "audit_conditional")
"""The parameters of ``outbox_insert``: ids, times, merchants, payloads, and the conditional flags."""


def outbox_insert(condition: str = "true") -> str:
    """A data-modifying CTE body that adds redacted audit events to the outbox inside a larger
    statement, in that statement's transaction. Its named parameters (``OUTBOX_PARAMS``): event ids
    (text[]), times (timestamptz[]), merchants (text[]), payloads as JSON text (text[]), and whether
    each event is written only when ``condition`` holds (boolean[]; the others are written
    regardless). Their order is kept: outbox ``seq`` and so chain order follow the arrays."""
    return f"""
        INSERT INTO audit_outbox (event_id, occurred_at, merchant_id, payload)
        SELECT e.event_id, e.occurred_at, e.merchant_id, CAST(e.payload AS jsonb)
          FROM unnest(:audit_event_ids::text[], :audit_occurred_at::timestamptz[], :audit_merchant_ids::text[],
                      :audit_payloads::text[], :audit_conditional::boolean[])
               WITH ORDINALITY AS e(event_id, occurred_at, merchant_id, payload, conditional, ord)
         WHERE NOT e.conditional OR ({condition})
         ORDER BY e.ord
        """


INSERT_OUTBOX = Statement(outbox_insert())
"""The outbox insert on its own: the events of a transaction that writes nothing else in the same
statement (one multi-row INSERT however many events it records)."""

_COUNT_OUTBOX = Statement("""
    SELECT count(*) FROM audit_outbox WHERE :event_id::text IS NULL OR event_id = :event_id::text
""")

_FETCH_UNCHAINED = Statement("""
    SELECT seq, event_id, occurred_at, payload, created_at FROM audit_outbox ORDER BY seq LIMIT :limit::integer
""")

_CHAIN_TIP = Statement("SELECT seq, hash FROM audit_chain ORDER BY seq DESC LIMIT 1 FOR UPDATE")

_APPEND_CHAIN = Statement("""
    WITH chained AS (
        INSERT INTO audit_chain (seq, event_id, outbox_seq, occurred_at, recorded_at, prev_hash, hash, canonical)
        SELECT * FROM unnest(:seqs::bigint[], :event_ids::text[], :outbox_seqs::bigint[],
                             :occurred_at::timestamptz[], :recorded_at::timestamptz[], :prev_hashes::text[],
                             :hashes::text[], :canonicals::text[])
        RETURNING outbox_seq
    )
    DELETE FROM audit_outbox WHERE seq IN (SELECT outbox_seq FROM chained)
""")

_CHAIN_AFTER = Statement("""
    SELECT seq, event_id, prev_hash, hash, canonical, recorded_at FROM audit_chain
     WHERE seq > :after_seq::bigint ORDER BY seq LIMIT :limit::integer
""")

_CHAIN_HASHES = Statement("""
    SELECT seq, hash FROM audit_chain
     WHERE seq >= :first_seq::bigint AND (:last_seq::bigint IS NULL OR seq <= :last_seq::bigint)
""")

_ENSURE_CURSORS = Statement("""
    INSERT INTO audit_sink_cursors (sink) SELECT unnest(:sinks::text[]) ON CONFLICT (sink) DO NOTHING
""")

_GET_CURSORS = Statement("SELECT sink, last_seq FROM audit_sink_cursors")

_ADVANCE_CURSOR = Statement("""
    UPDATE audit_sink_cursors SET last_seq = :to_seq::bigint, updated_at = now()
     WHERE sink = :sink::text AND last_seq = :from_seq::bigint
""")

_UNSHIPPED_LAG = Statement("""
    SELECT greatest(extract(epoch FROM now() - least(
               (SELECT min(recorded_at) FROM audit_chain WHERE seq > :after_seq::bigint),
               (SELECT min(created_at) FROM audit_outbox))), 0)::float8
""")

_TRY_ADVISORY_LOCK = Statement("SELECT pg_try_advisory_lock(:key::bigint)")
_ADVISORY_UNLOCK = Statement("SELECT pg_advisory_unlock(:key::bigint)")
_PING = Statement("SELECT 1")


async def count_outbox(connection: Connection, *, event_id: str | None = None) -> int:
    return int(await _COUNT_OUTBOX.fetchval(connection, event_id=event_id))


async def fetch_unchained(connection: Connection, limit: int) -> list[OutboxRow]:
    """Committed outbox rows in outbox order. A row whose transaction commits later than a row with a
    higher seq is simply taken in a later round: nothing is skipped for good."""
    return [row_to(OutboxRow, row) for row in await _FETCH_UNCHAINED.fetch(connection, limit=limit)]


async def chain_tip(connection: Connection) -> tuple[int, str | None]:
    """(last seq, its hash), or (0, None) for an empty chain. Locks the tip row so two chainers
    cannot both extend it."""
    row = await _CHAIN_TIP.fetchrow(connection)
    return (0, None) if row is None else (int(row["seq"]), str(row["hash"]))


async def append_chain(connection: Connection, links: Sequence[ChainLink]) -> None:
    """Insert chain rows and remove their outbox rows, in one statement."""
    if not links:
        return
    await _APPEND_CHAIN.execute(
        connection,
        seqs=[link.seq for link in links],
        event_ids=[link.event_id for link in links],
        outbox_seqs=[link.outbox_seq for link in links],
        occurred_at=[link.occurred_at for link in links],
        recorded_at=[link.recorded_at for link in links],
        prev_hashes=[link.prev_hash for link in links],
        hashes=[link.hash for link in links],
        canonicals=[link.canonical for link in links],
    )


async def chain_after(connection: Connection, after_seq: int, limit: int) -> list[ChainRow]:
    rows = await _CHAIN_AFTER.fetch(connection, after_seq=after_seq, limit=limit)
    return [row_to(ChainRow, row) for row in rows]


async def chain_hashes(connection: Connection, first_seq: int = 1, last_seq: int | None = None) -> dict[int, str]:
    """seq -> hash as the database recorded them: the anchor ``verify`` compares a sink against."""
    rows = await _CHAIN_HASHES.fetch(connection, first_seq=first_seq, last_seq=last_seq)
    return {int(row["seq"]): str(row["hash"]) for row in rows}


async def ensure_cursors(connection: Connection, sinks: Sequence[str]) -> None:
    if sinks:
        await _ENSURE_CURSORS.execute(connection, sinks=list(sinks))


async def get_cursors(connection: Connection) -> dict[str, int]:
    return {str(row["sink"]): int(row["last_seq"]) for row in await _GET_CURSORS.fetch(connection)}


async def advance_cursor(connection: Connection, sink: str, *, from_seq: int, to_seq: int) -> bool:
    """Compare-and-set: move ``sink``'s cursor from ``from_seq`` to ``to_seq``. False when another
    shipper moved it first."""
    return await _ADVANCE_CURSOR.execute(connection, sink=sink, from_seq=from_seq, to_seq=to_seq) == 1


async def unshipped_lag(connection: Connection, after_seq: int) -> float:
    """Seconds since the oldest event not yet shipped past ``after_seq`` was recorded (chained or
    not), by the database's clock; 0 when there is none."""
    lag = await _UNSHIPPED_LAG.fetchval(connection, after_seq=after_seq)
    return 0.0 if lag is None else float(lag)


async def try_advisory_lock(connection: Connection, key: int) -> bool:
    """Session-level ``pg_try_advisory_lock`` (on a dedicated connection): held until unlocked or
    the connection closes."""
    return bool(await _TRY_ADVISORY_LOCK.fetchval(connection, key=key))


async def advisory_unlock(connection: Connection, key: int) -> None:
    await _ADVISORY_UNLOCK.fetchval(connection, key=key)


async def ping(connection: Connection) -> None:
    await _PING.fetchval(connection)



# -- reading the trail (the dashboard) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    event_id: str
    payload: dict[str, Any]
    """The redacted event as recorded."""
    chain_seq: int | None
    """Its chain position; None while it waits in the outbox."""


@dataclass(frozen=True, slots=True)
class Verification:
    sink: str
    ok: bool
    checked: int
    last_seq: int
    summary: str
    verified_by: str
    verified_at: dt.datetime


# Chained events through ``audit_chain_subject_idx`` (the same expression, migration 0010); the
# outbox holds only what was not shipped yet, a few rows.
_ABOUT = Statement("""
    SELECT event_id, payload, chain_seq FROM (
        SELECT c.event_id, c.canonical::jsonb -> 'event' AS payload, c.seq AS chain_seq
          FROM audit_chain AS c
         WHERE COALESCE((c.canonical::jsonb #>> '{event,details,charge}'),
                        (c.canonical::jsonb #>> '{event,resource,id}')) = :subject::text
        UNION ALL
        SELECT o.event_id, o.payload, NULL
          FROM audit_outbox AS o
         WHERE COALESCE(o.payload #>> '{details,charge}', o.payload #>> '{resource,id}') = :subject::text
    ) AS e
     WHERE e.payload #>> '{actor,merchant_id}' = :merchant_id::text
     ORDER BY e.payload ->> 'occurred_at', e.event_id
     LIMIT :limit::integer
""")

_RECORD_VERIFICATION = Statement("""
    INSERT INTO audit_verifications (sink, ok, checked, last_seq, summary, verified_by)
    VALUES (:sink::text, :ok::boolean, :checked::integer, :last_seq::bigint, :summary::text, :verified_by::text)
""")

_LAST_VERIFICATIONS = Statement("""
    SELECT DISTINCT ON (sink) sink, ok, checked, last_seq, summary, verified_by, verified_at
      FROM audit_verifications ORDER BY sink, id DESC
""")

_CHAIN_TIP_SEQ = Statement("SELECT coalesce(max(seq), 0) FROM audit_chain")


async def events_about(connection: Connection, merchant_id: str, subject: str, *, limit: int) -> list[AuditEntry]:
    """``merchant_id``'s audit events about ``subject`` (a charge: its own, its attempts' and its
    refunds'), chained or not, in the order they occurred."""
    rows = await _ABOUT.fetch(connection, merchant_id=merchant_id, subject=subject, limit=limit)
    return [row_to(AuditEntry, row) for row in rows]


async def record_verification(
    connection: Connection, *, sink: str, ok: bool, checked: int, last_seq: int, summary: str, verified_by: str
) -> None:
    await _RECORD_VERIFICATION.execute(
        connection, sink=sink, ok=ok, checked=checked, last_seq=last_seq, summary=summary, verified_by=verified_by
    )


async def last_verifications(connection: Connection) -> dict[str, Verification]:
    """Each sink's latest verification run."""
    return {row["sink"]: row_to(Verification, row) for row in await _LAST_VERIFICATIONS.fetch(connection)}


async def chain_tip_seq(connection: Connection) -> int:
    """The last chain position (0 for an empty chain), without locking it."""
    return int(await _CHAIN_TIP_SEQ.fetchval(connection))
