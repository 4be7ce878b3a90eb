"""Charges and their attempts: the only SQL for both. Every query filters on ``merchant_id`` so the
planner prunes to one hash partition."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import Row, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from payorch import jsontext
from payorch.storage.audit import OutboxColumns, outbox_insert_sql
from payorch.storage.idempotency import IdempotencyRecord
from payorch.storage.tables import charge_attempts, charges


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    merchant_id: str
    livemode: bool
    amount: int
    currency: str
    status: str
    capture: bool
    amount_captured: int
    amount_refunded: int
    payment_method: str | None
    card_brand: str | None
    card_last4: str | None
    card_exp_month: int | None
    card_exp_year: int | None
    gateway: str | None
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    decline_code: str | None
    description: str | None
    metadata: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    merchant_id: str
    charge_id: str
    seq: int
    gateway: str
    token: str
    status: str
    gateway_reference: str | None
    raw_code: str | None
    decline_code: str | None
    message: str | None
    latency_ms: int | None
    check_count: int
    next_check_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class NewCharge:
    id: str
    merchant_id: str
    livemode: bool
    amount: int
    currency: str
    capture: bool
    payment_method: str | None
    description: str | None
    metadata: dict[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    api_key_id: str | None = None


_CHARGE_FIELDS = Charge.__slots__
_ATTEMPT_FIELDS = Attempt.__slots__


def _charge(row: Row[Any]) -> Charge:
    mapping = row._mapping
    return Charge(**{name: mapping[name] for name in _CHARGE_FIELDS})


def _attempt(row: Row[Any]) -> Attempt:
    mapping = row._mapping
    return Attempt(**{name: mapping[name] for name in _ATTEMPT_FIELDS})


async def insert_charge_with_attempt(
    session: AsyncSession, charge: NewCharge, *, attempt_id: str, gateway: str, token: str
) -> tuple[Charge, Attempt]:
    """Write the pending charge and its first pending attempt in one round trip."""
    result = await session.execute(
        text(
            """
            WITH c AS (
                INSERT INTO charges (id, merchant_id, livemode, amount, currency, status, capture,
                                     payment_method, description, metadata, idempotency_key, api_key_id)
                VALUES (:id, :merchant_id, :livemode, :amount, :currency, 'pending', :capture,
                        :payment_method, :description, CAST(:metadata AS jsonb), :idempotency_key, :api_key_id)
                RETURNING *
            ), a AS (
                INSERT INTO charge_attempts (id, merchant_id, charge_id, seq, gateway, token, status)
                VALUES (:attempt_id, :merchant_id, :id, 1, :gateway, :token, 'pending')
                RETURNING *
            )
            SELECT to_jsonb(c.*) AS charge, to_jsonb(a.*) AS attempt FROM c, a
            """
        ),
        {
            "id": charge.id,
            "merchant_id": charge.merchant_id,
            "livemode": charge.livemode,
            "amount": charge.amount,
            "currency": charge.currency,
            "capture": charge.capture,
            "payment_method": charge.payment_method,
            "description": charge.description,
            "metadata": jsontext.dumps_text(charge.metadata),
            "idempotency_key": charge.idempotency_key,
            "api_key_id": charge.api_key_id,
            "attempt_id": attempt_id,
            "gateway": gateway,
            "token": token,
        },
    )
    row = result.one()
    return _charge_from_json(row.charge), _attempt_from_json(row.attempt)


_OPEN_CHARGE = f"""
    WITH k AS (
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, request_method, request_path, status, charge_id)
        SELECT $2::text, $11::text, $15::bytea, $16::text, $17::text, 'in_progress', $1::text
         WHERE $11::text IS NOT NULL
        ON CONFLICT (merchant_id, key) DO NOTHING
        RETURNING key
    ), ok AS (
        SELECT 1 WHERE $11::text IS NULL OR EXISTS (SELECT 1 FROM k)
    ), c AS (
        INSERT INTO charges (id, merchant_id, livemode, amount, currency, status, capture,
                             payment_method, description, metadata, idempotency_key, api_key_id,
                             created_at, updated_at)
        SELECT $1::text, $2::text, $3::boolean, $4::bigint, $5::text, 'pending', $6::boolean, $7::text,
               $8::text, CAST($9::text AS jsonb), $11::text, $10::text, $23::timestamptz, $23::timestamptz
         WHERE EXISTS (SELECT 1 FROM ok)
        RETURNING id
    ), a AS (
        INSERT INTO charge_attempts (id, merchant_id, charge_id, seq, gateway, token, status)
        SELECT $12::text, $2::text, $1::text, 1, $13::text, $14::text, 'pending'
         WHERE EXISTS (SELECT 1 FROM ok)
        RETURNING id
    ), o AS ({outbox_insert_sql(18, "EXISTS (SELECT 1 FROM ok)")})
    SELECT EXISTS (SELECT 1 FROM c) AS opened, e.fingerprint AS key_fingerprint, e.status AS key_status,
           e.charge_id AS key_charge_id, e.response_status AS key_response_status, e.response_body AS key_response_body,
           e.locked_at AS key_locked_at
      FROM (SELECT 1) AS one
      LEFT JOIN c ON true
      LEFT JOIN idempotency_keys AS e
             ON e.merchant_id = $2::text AND e.key = $11::text AND NOT EXISTS (SELECT 1 FROM ok)
    """  # noqa: S608 - the outbox fragment holds placeholders only; every value is bound


async def open_charge(
    connection: asyncpg.Connection,
    charge: NewCharge,
    *,
    attempt_id: str,
    gateway: str,
    token: str,
    fingerprint: bytes | None,
    method: str,
    path: str,
    audit: OutboxColumns,
    created_at: datetime,
) -> Charge | IdempotencyRecord | None:
    """One statement, so one round trip and its own transaction: take ``charge.idempotency_key`` (when
    there is one), write the pending charge, its first pending attempt and the ``audit`` events (all
    of which depend on the charge being written). When the key already exists nothing is written and
    the key's record comes back instead, so a replay needs no second round trip; None when it exists
    but this statement's snapshot cannot see it yet (its first request is committing right now)."""
    row = await connection.fetchrow(
        _OPEN_CHARGE,
        charge.id,
        charge.merchant_id,
        charge.livemode,
        charge.amount,
        charge.currency,
        charge.capture,
        charge.payment_method,
        charge.description,
        jsontext.dumps_text(charge.metadata),
        charge.api_key_id,
        charge.idempotency_key,
        attempt_id,
        gateway,
        token,
        fingerprint,
        method,
        path,
        *audit,
        [True] * len(audit[0]),
        created_at,
    )
    if row["opened"]:
        # What the statement wrote, built here rather than sent back and decoded.
        return Charge(
            id=charge.id,
            merchant_id=charge.merchant_id,
            livemode=charge.livemode,
            amount=charge.amount,
            currency=charge.currency,
            status="pending",
            capture=charge.capture,
            amount_captured=0,
            amount_refunded=0,
            payment_method=charge.payment_method,
            card_brand=None,
            card_last4=None,
            card_exp_month=None,
            card_exp_year=None,
            gateway=None,
            gateway_reference=None,
            failure_code=None,
            failure_message=None,
            decline_code=None,
            description=charge.description,
            metadata=dict(charge.metadata),
            created_at=created_at,
            updated_at=created_at,
        )
    if row["key_status"] is None or charge.idempotency_key is None:
        return None
    return IdempotencyRecord(
        merchant_id=charge.merchant_id,
        key=charge.idempotency_key,
        fingerprint=row["key_fingerprint"],
        status=row["key_status"],
        charge_id=row["key_charge_id"],
        response_status=row["key_response_status"],
        response_body=row["key_response_body"],
        locked_at=row["key_locked_at"],
    )


# A pending attempt's result ($1 merchant, $2 attempt, $3-$9 the AttemptResult's fields, in order).
_RECORD_ATTEMPT = """
        UPDATE charge_attempts
           SET status = $3::text, gateway_reference = $4::text, raw_code = $5::text, decline_code = $6::text,
               message = $7::text, latency_ms = $8::integer, next_check_at = $9::timestamptz, updated_at = now()
         WHERE merchant_id = $1::text AND id = $2::text AND status = 'pending'
        RETURNING id
"""


def _record_attempt_args(merchant_id: str, attempt_id: str, attempt: AttemptResult) -> tuple[Any, ...]:
    """``_RECORD_ATTEMPT``'s $1-$9."""
    return (
        merchant_id,
        attempt_id,
        attempt.status,
        attempt.gateway_reference,
        attempt.raw_code,
        attempt.decline_code,
        attempt.message,
        attempt.latency_ms,
        attempt.next_check_at,
    )


_CLOSE_CHARGE = f"""
    WITH a AS ({_RECORD_ATTEMPT}), c AS (
        UPDATE charges
           SET status = $11::text, amount_captured = $12::bigint, card_brand = $13::text, card_last4 = $14::text,
               card_exp_month = $15::integer, card_exp_year = $16::integer, gateway = $17::text,
               gateway_reference = $18::text, failure_code = $19::text, failure_message = $20::text,
               decline_code = $21::text, updated_at = $22::timestamptz
         WHERE merchant_id = $1::text AND id = $10::text AND status = 'pending'
        RETURNING id
    ), k AS (
        UPDATE idempotency_keys
           SET status = 'completed', response_status = $24::integer, response_body = $25::bytea,
               completed_at = now(), charge_id = $10::text
         WHERE merchant_id = $1::text AND key = $23::text AND EXISTS (SELECT 1 FROM c)
        RETURNING key
    ), o AS ({outbox_insert_sql(26, "EXISTS (SELECT 1 FROM c)")})
    SELECT EXISTS (SELECT 1 FROM c) AS charge_moved
    """  # noqa: S608 - the outbox fragment holds placeholders only; every value is bound


_ADVANCE_ATTEMPT = f"""
    WITH prev AS ({_RECORD_ATTEMPT}), nxt AS (
        INSERT INTO charge_attempts (id, merchant_id, charge_id, seq, gateway, token, status)
        VALUES ($10::text, $1::text, $11::text, $12::integer, $13::text, $14::text, 'pending')
        RETURNING id
    ), o AS ({outbox_insert_sql(15)})
    SELECT EXISTS (SELECT 1 FROM prev) AS recorded
    """  # noqa: S608 - the outbox fragment holds placeholders only; every value is bound


async def advance_attempt(
    connection: asyncpg.Connection,
    merchant_id: str,
    *,
    attempt_id: str,
    attempt: AttemptResult,
    charge_id: str,
    next_attempt_id: str,
    seq: int,
    gateway: str,
    token: str,
    audit: OutboxColumns,
) -> bool:
    """Failover in one statement, so one round trip and its own transaction: the finished attempt's
    result (if it is still pending; False otherwise), the charge's next pending attempt and the
    ``audit`` events."""
    recorded = await connection.fetchval(
        _ADVANCE_ATTEMPT,
        *_record_attempt_args(merchant_id, attempt_id, attempt),
        next_attempt_id,
        charge_id,
        seq,
        gateway,
        token,
        *audit,
        [False] * len(audit[0]),
    )
    return bool(recorded)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What a finished attempt's row records."""

    status: str
    gateway_reference: str | None
    raw_code: str | None
    decline_code: str | None
    message: str | None
    latency_ms: int | None
    next_check_at: datetime | None


async def close_charge(
    connection: asyncpg.Connection,
    *,
    attempt_id: str,
    attempt: AttemptResult,
    charge: Charge,
    idempotency_key: str | None,
    reply_status: int,
    reply_body: bytes,
    audit: OutboxColumns,
    audit_needs_charge: list[bool],
) -> bool:
    """One statement, so one round trip and its own transaction, from a pending charge to ``charge``
    (its new state, ``updated_at`` included, as the caller rendered it): the last attempt's result
    (if the attempt is still pending), the charge (if it is still pending), the idempotent reply
    (when ``idempotency_key`` is given, and only if the charge moved) and the ``audit`` events (those
    flagged in ``audit_needs_charge`` only if the charge moved). False: someone else (the reconciler)
    moved the charge first, and only the attempt and the unflagged events were written."""
    moved = await connection.fetchval(
        _CLOSE_CHARGE,
        *_record_attempt_args(charge.merchant_id, attempt_id, attempt),
        charge.id,
        charge.status,
        charge.amount_captured,
        charge.card_brand,
        charge.card_last4,
        charge.card_exp_month,
        charge.card_exp_year,
        charge.gateway,
        charge.gateway_reference,
        charge.failure_code,
        charge.failure_message,
        charge.decline_code,
        charge.updated_at,
        idempotency_key,
        reply_status,
        reply_body,
        *audit,
        audit_needs_charge,
    )
    return bool(moved)


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _charge_from_json(data: dict[str, Any]) -> Charge:
    values = {name: data[name] for name in _CHARGE_FIELDS}
    values["created_at"] = _ts(data["created_at"])
    values["updated_at"] = _ts(data["updated_at"])
    return Charge(**values)


def _attempt_from_json(data: dict[str, Any]) -> Attempt:
    values = {name: data[name] for name in _ATTEMPT_FIELDS}
    values["created_at"] = _ts(data["created_at"])
    values["next_check_at"] = _ts(data["next_check_at"])
    return Attempt(**values)


async def get_charge(
    session: AsyncSession, merchant_id: str, charge_id: str, *, livemode: bool | None = None, for_update: bool = False
) -> Charge | None:
    query = select(charges).where(charges.c.merchant_id == merchant_id, charges.c.id == charge_id)
    if livemode is not None:
        query = query.where(charges.c.livemode == livemode)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).one_or_none()
    return None if row is None else _charge(row)


async def list_charges(
    session: AsyncSession,
    merchant_id: str,
    *,
    livemode: bool,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[Charge], bool]:
    """Newest first. Returns one page and whether more exist beyond it in the direction of travel."""
    query = select(charges).where(charges.c.merchant_id == merchant_id, charges.c.livemode == livemode)
    if ending_before is not None:
        # Walking towards newer charges: take the oldest ``limit`` above the cursor, then flip.
        query = query.where(charges.c.id > ending_before).order_by(charges.c.id.asc()).limit(limit + 1)
        rows = [_charge(r) for r in (await session.execute(query)).all()]
        return list(reversed(rows[:limit])), len(rows) > limit
    if starting_after is not None:
        query = query.where(charges.c.id < starting_after)
    query = query.order_by(charges.c.id.desc()).limit(limit + 1)
    rows = [_charge(r) for r in (await session.execute(query)).all()]
    return rows[:limit], len(rows) > limit


async def update_charge(
    session: AsyncSession, merchant_id: str, charge_id: str, *, expected_status: str, **values: Any
) -> Charge | None:
    """Change a charge only if it is still in ``expected_status``; None means someone else moved it."""
    row = (
        await session.execute(
            update(charges)
            .where(
                charges.c.merchant_id == merchant_id,
                charges.c.id == charge_id,
                charges.c.status == expected_status,
            )
            .values(updated_at=func.now(), **values)
            .returning(charges)
        )
    ).one_or_none()
    return None if row is None else _charge(row)


async def update_attempt(
    session: AsyncSession, merchant_id: str, attempt_id: str, *, expected_status: str, **values: Any
) -> Attempt | None:
    row = (
        await session.execute(
            update(charge_attempts)
            .where(
                charge_attempts.c.merchant_id == merchant_id,
                charge_attempts.c.id == attempt_id,
                charge_attempts.c.status == expected_status,
            )
            .values(updated_at=func.now(), **values)
            .returning(charge_attempts)
        )
    ).one_or_none()
    return None if row is None else _attempt(row)


async def list_attempts(session: AsyncSession, merchant_id: str, charge_id: str) -> list[Attempt]:
    query = (
        select(charge_attempts)
        .where(charge_attempts.c.merchant_id == merchant_id, charge_attempts.c.charge_id == charge_id)
        .order_by(charge_attempts.c.seq)
    )
    return [_attempt(r) for r in (await session.execute(query)).all()]


async def lease_due_attempts(
    session: AsyncSession, *, limit: int, stale_before: datetime, lease_seconds: float
) -> list[Attempt]:
    """Claim attempts due for a lookup: unknown ones whose check is due, and pending ones older than
    ``stale_before`` (their request died). Each is leased by pushing its next check past the lease,
    so several reconcilers never look up one attempt at once (``FOR UPDATE SKIP LOCKED``) and a
    reconciler that dies mid-lookup only delays it."""
    result = await session.execute(
        text(
            """
            UPDATE charge_attempts AS a
               SET next_check_at = now() + make_interval(secs => :lease), check_count = a.check_count + 1,
                   updated_at = now()
              FROM (SELECT merchant_id, id FROM charge_attempts
                     WHERE status IN ('pending', 'unknown')
                       AND coalesce(next_check_at, created_at) <= now()
                       AND (status = 'unknown' OR created_at < :stale_before)
                     ORDER BY coalesce(next_check_at, created_at)
                     LIMIT :limit
                     FOR UPDATE SKIP LOCKED) AS due
             WHERE a.merchant_id = due.merchant_id AND a.id = due.id
            RETURNING a.*
            """
        ),
        {"lease": lease_seconds, "stale_before": stale_before, "limit": limit},
    )
    return [_attempt(r) for r in result.all()]


async def count_unresolved_attempts(session: AsyncSession) -> int:
    query = (
        select(func.count()).select_from(charge_attempts).where(charge_attempts.c.status.in_(("pending", "unknown")))
    )
    return int((await session.execute(query)).scalar_one())
