"""Charges and their attempts (one aggregate): the records and every read. The writes are in
``charge_writes`` (the request path and settlement) and ``attempts`` (recovery). Every query on one
merchant's rows filters on ``merchant_id``, so the planner prunes to one hash partition."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from payorch.storage.sql import Connection, Statement, row_to


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
    routing: dict[str, Any] | None = None
    """How it was routed (orchestration/routing.py ``Decision.record``); None before migration 0009."""
    return_url: str | None = None
    setup_future_usage: str | None = None
    off_session: bool = False
    customer_presence: dict[str, Any] | None = None
    """The request's ``browser_info`` and ``authentication_data``, passed through to the gateway."""
    next_action: dict[str, Any] | None = None
    """While ``requires_action``: what the customer's frontend does (the public ``next_action``)."""
    authentication: dict[str, Any] | None = None
    """The customer authentication's outcome: ``{status, version, liability_shifted}``."""


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
    authentication_requested: bool = False
    """The SCA retry: this attempt asked the issuer for a challenge."""


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
    routing: dict[str, Any] | None = None
    return_url: str | None = None
    setup_future_usage: str | None = None
    off_session: bool = False
    customer_presence: dict[str, Any] | None = None

    def pending(self, created_at: datetime) -> Charge:
        """The charge as its first write leaves it."""
        return Charge(
            id=self.id,
            merchant_id=self.merchant_id,
            livemode=self.livemode,
            amount=self.amount,
            currency=self.currency,
            status="pending",
            capture=self.capture,
            amount_captured=0,
            amount_refunded=0,
            payment_method=self.payment_method,
            card_brand=None,
            card_last4=None,
            card_exp_month=None,
            card_exp_year=None,
            gateway=None,
            gateway_reference=None,
            failure_code=None,
            failure_message=None,
            decline_code=None,
            description=self.description,
            metadata=dict(self.metadata),
            created_at=created_at,
            updated_at=created_at,
            routing=self.routing,
            return_url=self.return_url,
            setup_future_usage=self.setup_future_usage,
            off_session=self.off_session,
            customer_presence=self.customer_presence,
        )


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

    def params(self) -> dict[str, object]:
        return {f"attempt_{name}": getattr(self, name) for name in _RESULT_FIELDS}


_RESULT_FIELDS = tuple(f.name for f in fields(AttemptResult))
CHARGE_COLUMNS = ", ".join(f.name for f in fields(Charge))
ATTEMPT_COLUMNS = ", ".join(f.name for f in fields(Attempt))

_GET = Statement(
    f"""
    SELECT {CHARGE_COLUMNS} FROM charges
     WHERE merchant_id = :merchant_id::text AND id = :id::text
       AND (:livemode::boolean IS NULL OR livemode = :livemode::boolean)
    """
)
_GET_FOR_UPDATE = Statement(
    f"""
    SELECT {CHARGE_COLUMNS} FROM charges
     WHERE merchant_id = :merchant_id::text AND id = :id::text
       AND (:livemode::boolean IS NULL OR livemode = :livemode::boolean)
       FOR UPDATE
    """
)
_OLDER_PAGE = Statement(
    f"""
    SELECT {CHARGE_COLUMNS} FROM charges
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean
       AND (:before::text IS NULL OR id < :before::text)
     ORDER BY id DESC LIMIT :limit::integer
    """
)
_NEWER_PAGE = Statement(
    f"""
    SELECT {CHARGE_COLUMNS} FROM charges
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean AND id > :after::text
     ORDER BY id ASC LIMIT :limit::integer
    """
)
_ATTEMPTS = Statement(
    f"""
    SELECT {ATTEMPT_COLUMNS} FROM charge_attempts
     WHERE merchant_id = :merchant_id::text AND charge_id = :charge_id::text ORDER BY seq
    """
)
_ATTEMPT = Statement(
    f"""
    SELECT {ATTEMPT_COLUMNS} FROM charge_attempts WHERE merchant_id = :merchant_id::text AND id = :id::text
    """
)
# A gateway's notification names our attempt id (its reference on our side) or its own payment id,
# never the merchant: these two look across partitions, and answer only when exactly one matches.
_ATTEMPT_BY_ID = Statement(
    f"""
    SELECT {ATTEMPT_COLUMNS} FROM charge_attempts WHERE id = :id::text AND gateway = :gateway::text LIMIT 2
    """
)
_ATTEMPT_BY_REFERENCE = Statement(
    f"""
    SELECT {ATTEMPT_COLUMNS} FROM charge_attempts
     WHERE gateway = :gateway::text AND gateway_reference = :reference::text LIMIT 2
    """
)
_COUNT_UNRESOLVED = Statement("SELECT count(*) FROM charge_attempts WHERE status IN ('pending', 'unknown')")


async def get_charge(
    connection: Connection, merchant_id: str, charge_id: str, *, livemode: bool | None = None, for_update: bool = False
) -> Charge | None:
    """One charge (under a row lock with ``for_update``, in a transaction); ``livemode`` narrows to
    one mode's charges, as a caller with a test or live key sees them."""
    statement = _GET_FOR_UPDATE if for_update else _GET
    row = await statement.fetchrow(connection, merchant_id=merchant_id, id=charge_id, livemode=livemode)
    return None if row is None else row_to(Charge, row)


async def list_charges(
    connection: Connection,
    merchant_id: str,
    *,
    livemode: bool,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[Charge], bool]:
    """Newest first. Returns one page and whether more exist beyond it in the direction of travel."""
    if ending_before is not None:
        # Walking towards newer charges: take the oldest ``limit`` above the cursor, then flip.
        rows = await _NEWER_PAGE.fetch(
            connection, merchant_id=merchant_id, livemode=livemode, after=ending_before, limit=limit + 1
        )
        page = [row_to(Charge, row) for row in rows]
        return list(reversed(page[:limit])), len(page) > limit
    rows = await _OLDER_PAGE.fetch(
        connection, merchant_id=merchant_id, livemode=livemode, before=starting_after, limit=limit + 1
    )
    page = [row_to(Charge, row) for row in rows]
    return page[:limit], len(page) > limit


async def list_attempts(connection: Connection, merchant_id: str, charge_id: str) -> list[Attempt]:
    rows = await _ATTEMPTS.fetch(connection, merchant_id=merchant_id, charge_id=charge_id)
    return [row_to(Attempt, row) for row in rows]


async def get_attempt(connection: Connection, merchant_id: str, attempt_id: str) -> Attempt | None:
    row = await _ATTEMPT.fetchrow(connection, merchant_id=merchant_id, id=attempt_id)
    return None if row is None else row_to(Attempt, row)


async def find_attempt(
    connection: Connection, gateway: str, *, attempt_id: str | None, reference: str | None
) -> Attempt | None:
    """The attempt a gateway's notification names: by our attempt id, else by the gateway's reference."""
    if attempt_id is not None:
        rows = await _ATTEMPT_BY_ID.fetch(connection, id=attempt_id, gateway=gateway)
    elif reference is not None:
        rows = await _ATTEMPT_BY_REFERENCE.fetch(connection, gateway=gateway, reference=reference)
    else:
        return None
    return row_to(Attempt, rows[0]) if len(rows) == 1 else None


async def count_unresolved_attempts(connection: Connection) -> int:
    return int(await _COUNT_UNRESOLVED.fetchval(connection))
