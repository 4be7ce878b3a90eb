"""Charges and their attempts: the only SQL for both. Every query filters on ``merchant_id`` so the
planner prunes to one hash partition."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, TextualSelect, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

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
            "metadata": _json(charge.metadata),
            "idempotency_key": charge.idempotency_key,
            "api_key_id": charge.api_key_id,
            "attempt_id": attempt_id,
            "gateway": gateway,
            "token": token,
        },
    )
    row = result.one()
    return _charge_from_json(row.charge), _attempt_from_json(row.attempt)


_TAKE_KEY_AND_INSERT = text(
    """
    WITH k AS (
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, request_method, request_path, status, charge_id)
        VALUES (:merchant_id, :idempotency_key, :fingerprint, :method, :path, 'in_progress', :id)
        ON CONFLICT (merchant_id, key) DO NOTHING
        RETURNING key
    ), c AS (
        INSERT INTO charges (id, merchant_id, livemode, amount, currency, status, capture,
                             payment_method, description, metadata, idempotency_key, api_key_id)
        SELECT CAST(:id AS text), CAST(:merchant_id AS text), CAST(:livemode AS boolean), CAST(:amount AS bigint),
               CAST(:currency AS text), 'pending', CAST(:capture AS boolean), CAST(:payment_method AS text),
               CAST(:description AS text), CAST(:metadata AS jsonb), CAST(:idempotency_key AS text),
               CAST(:api_key_id AS text)
        WHERE EXISTS (SELECT 1 FROM k)
        RETURNING *
    ), a AS (
        INSERT INTO charge_attempts (id, merchant_id, charge_id, seq, gateway, token, status)
        SELECT CAST(:attempt_id AS text), CAST(:merchant_id AS text), CAST(:id AS text), 1, CAST(:gateway AS text),
               CAST(:token AS text), 'pending'
        WHERE EXISTS (SELECT 1 FROM k)
        RETURNING *
    )
    SELECT to_jsonb(c.*) AS charge, to_jsonb(a.*) AS attempt FROM c, a
    """
)


async def take_key_and_insert_charge(
    session: AsyncSession,
    charge: NewCharge,
    *,
    attempt_id: str,
    gateway: str,
    token: str,
    fingerprint: bytes,
    method: str,
    path: str,
) -> tuple[Charge, Attempt] | None:
    """Take ``charge.idempotency_key`` for this charge and write the pending charge and its first
    attempt, all in one round trip; None (nothing written) when the key already exists."""
    if charge.idempotency_key is None:
        raise ValueError("take_key_and_insert_charge needs the charge's idempotency key")
    result = await session.execute(
        _TAKE_KEY_AND_INSERT,
        {
            "id": charge.id,
            "merchant_id": charge.merchant_id,
            "livemode": charge.livemode,
            "amount": charge.amount,
            "currency": charge.currency,
            "capture": charge.capture,
            "payment_method": charge.payment_method,
            "description": charge.description,
            "metadata": _json(charge.metadata),
            "idempotency_key": charge.idempotency_key,
            "api_key_id": charge.api_key_id,
            "attempt_id": attempt_id,
            "gateway": gateway,
            "token": token,
            "fingerprint": fingerprint,
            "method": method,
            "path": path,
        },
    )
    row = result.one_or_none()
    return None if row is None else (_charge_from_json(row.charge), _attempt_from_json(row.attempt))


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


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


async def insert_attempt(
    session: AsyncSession, *, attempt_id: str, merchant_id: str, charge_id: str, seq: int, gateway: str, token: str
) -> Attempt:
    row = (
        await session.execute(
            insert(charge_attempts)
            .values(
                id=attempt_id,
                merchant_id=merchant_id,
                charge_id=charge_id,
                seq=seq,
                gateway=gateway,
                token=token,
                status="pending",
            )
            .returning(charge_attempts)
        )
    ).one()
    return _attempt(row)


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


_FINISH_STATEMENTS: dict[tuple[tuple[str, ...], tuple[str, ...]], TextualSelect] = {}


def _finish_statement(attempt_columns: tuple[str, ...], charge_columns: tuple[str, ...]) -> TextualSelect:
    """One prepared text per set of columns (a handful in all), so nothing is built or compiled per call."""
    key = (attempt_columns, charge_columns)
    statement = _FINISH_STATEMENTS.get(key)
    if statement is None:
        known = set(charge_attempts.c.keys()) | set(charges.c.keys())
        if not set(attempt_columns) | set(charge_columns) <= known:
            raise ValueError(f"unknown columns: {sorted(set(attempt_columns) | set(charge_columns) - known)}")
        attempt_set = ", ".join(f"{name} = :a_{name}" for name in attempt_columns)
        charge_set = ", ".join(f"{name} = :c_{name}" for name in charge_columns)
        sql = f"""
            WITH attempt AS (
                UPDATE charge_attempts SET {attempt_set}, updated_at = now()
                 WHERE merchant_id = :merchant_id AND id = :attempt_id AND status = :attempt_expected
                RETURNING id
            )
            UPDATE charges SET {charge_set}, updated_at = now()
             WHERE merchant_id = :merchant_id AND id = :charge_id AND status = :charge_expected
            RETURNING *
            """  # noqa: S608 - column names checked against the tables above, values bound
        statement = text(sql).columns(*charges.c)
        _FINISH_STATEMENTS[key] = statement
    return statement


async def finish_attempt_and_charge(
    session: AsyncSession,
    merchant_id: str,
    *,
    attempt_id: str,
    attempt_expected: str,
    attempt_values: dict[str, Any],
    charge_id: str,
    charge_expected: str,
    charge_values: dict[str, Any],
) -> Charge | None:
    """``update_attempt`` and ``update_charge`` in one round trip: the attempt moves if it is still in
    ``attempt_expected``, the charge if it is still in ``charge_expected`` (None: someone else moved
    the charge; the attempt is updated either way, as the two statements did)."""
    statement = _finish_statement(tuple(attempt_values), tuple(charge_values))
    params = {
        "merchant_id": merchant_id,
        "attempt_id": attempt_id,
        "attempt_expected": attempt_expected,
        "charge_id": charge_id,
        "charge_expected": charge_expected,
        **{f"a_{name}": value for name, value in attempt_values.items()},
        **{f"c_{name}": value for name, value in charge_values.items()},
    }
    row = (await session.execute(statement, params)).one_or_none()
    return None if row is None else _charge(row)


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
