"""The sandbox processor's own books (what a real gateway would keep on its side): the only SQL for them.

Reached only through :class:`SandboxLedger`, which the sandbox gateway is given at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payorch.storage.database import Database
from payorch.storage.sql import Statement, row_to


@dataclass(frozen=True, slots=True)
class SandboxPayment:
    gateway: str
    reference: str
    payment_id: str
    merchant_id: str
    charge_id: str
    amount: int
    currency: str
    token: str
    status: str
    amount_captured: int
    amount_refunded: int
    decline_code: str | None
    capture: bool = True
    return_url: str | None = None


@dataclass(frozen=True, slots=True)
class SandboxOperation:
    kind: str
    payment_id: str
    amount: int
    operation_id: str


_PAYMENT_COLUMNS = ", ".join(SandboxPayment.__slots__)

# A new payment, or the one already recorded under (gateway, reference): one statement, one round
# trip, its own transaction. The SELECT sees the statement's snapshot, so a twin committed by a
# concurrent request after it began is not seen: then nothing comes back and ``record`` looks again.
_RECORD = Statement(
    f"""
    WITH fresh AS (
        INSERT INTO sandbox_payments ({_PAYMENT_COLUMNS})
        VALUES (:gateway::text, :reference::text, :payment_id::text, :merchant_id::text, :charge_id::text,
                :amount::bigint, :currency::text, :token::text, :status::text, :amount_captured::bigint,
                :amount_refunded::bigint, :decline_code::text, :capture::boolean, :return_url::text)
        ON CONFLICT (gateway, reference) DO NOTHING
        RETURNING {_PAYMENT_COLUMNS}
    )
    SELECT {_PAYMENT_COLUMNS}, true AS fresh FROM fresh
    UNION ALL
    SELECT {_PAYMENT_COLUMNS}, false AS fresh FROM sandbox_payments
     WHERE gateway = :gateway::text AND reference = :reference::text AND NOT EXISTS (SELECT 1 FROM fresh)
    """
)
_FIND = Statement(
    f"SELECT {_PAYMENT_COLUMNS} FROM sandbox_payments WHERE gateway = :gateway::text AND reference = :reference::text"
)
_FIND_BY_PAYMENT_ID = Statement(
    f"""
    SELECT {_PAYMENT_COLUMNS} FROM sandbox_payments WHERE gateway = :gateway::text AND payment_id = :payment_id::text
    """
)
_LOCK_BY_PAYMENT_ID = Statement(_FIND_BY_PAYMENT_ID.sql + " FOR UPDATE")
_FIND_PAYMENT = Statement(f"SELECT {_PAYMENT_COLUMNS} FROM sandbox_payments WHERE payment_id = :payment_id::text")
# The simulated customer's answer, for a payment still waiting for it.
_AUTHENTICATE = Statement(
    f"""
    UPDATE sandbox_payments
       SET status = CASE WHEN NOT :approved::boolean THEN 'declined' WHEN capture THEN 'captured' ELSE 'authorized' END,
           amount_captured = CASE WHEN :approved::boolean AND capture THEN amount ELSE 0 END,
           decline_code = CASE WHEN :approved::boolean THEN NULL ELSE 'authentication_failed' END,
           updated_at = now()
     WHERE payment_id = :payment_id::text AND status = 'requires_action'
    RETURNING {_PAYMENT_COLUMNS}
    """
)
_SETTLE = Statement(
    f"""
    UPDATE sandbox_payments SET status = :status::text, amount_captured = :amount_captured::bigint, updated_at = now()
     WHERE gateway = :gateway::text AND reference = :reference::text AND status = 'processing'
    RETURNING {_PAYMENT_COLUMNS}
    """
)
_SETTLE_IF_OLDER = Statement(
    """
    UPDATE sandbox_payments
       SET status = :status::text, amount_captured = :amount_captured::bigint, updated_at = now()
     WHERE gateway = :gateway::text AND reference = :reference::text AND status = 'processing'
       AND created_at < now() - make_interval(secs => :seconds::double precision)
    """
)
_PREVIOUS_OPERATION = Statement(
    """
    SELECT kind, payment_id, amount, operation_id FROM sandbox_operations
     WHERE gateway = :gateway::text AND idempotency_key = :idempotency_key::text
    """
)
_OPERATE = Statement(
    """
    WITH p AS (
        UPDATE sandbox_payments
           SET status = :status::text, amount_captured = :amount_captured::bigint,
               amount_refunded = :amount_refunded::bigint, updated_at = now()
         WHERE gateway = :gateway::text AND payment_id = :payment_id::text
        RETURNING payment_id
    )
    INSERT INTO sandbox_operations (gateway, idempotency_key, payment_id, kind, amount, operation_id)
    VALUES (:gateway::text, :idempotency_key::text, :payment_id::text, :kind::text, :amount::bigint,
            :operation_id::text)
    """
)


class SandboxLedger:
    """Each call is its own transaction, as it would be inside a real processor."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, payment: SandboxPayment) -> tuple[SandboxPayment, bool]:
        """Insert a payment keyed by (gateway, reference); a repeat returns the first one and False."""
        values = {name: getattr(payment, name) for name in SandboxPayment.__slots__}
        async with self._db.connection() as connection:
            row = await _RECORD.fetchrow(connection, **values)
            if row is None:  # a twin committed after this statement's snapshot: it is there now
                row = await _FIND.fetchrow(connection, gateway=payment.gateway, reference=payment.reference)
                if row is None:
                    raise RuntimeError("a sandbox payment vanished from the ledger")
                return row_to(SandboxPayment, row), False
        return row_to(SandboxPayment, row), bool(row["fresh"])

    async def settle(self, gateway: str, reference: str, *, status: str, amount_captured: int) -> SandboxPayment:
        """Finish a payment that was processing (the late success of ``tok_timeout``)."""
        async with self._db.connection() as connection:
            row = await _SETTLE.fetchrow(
                connection, gateway=gateway, reference=reference, status=status, amount_captured=amount_captured
            )
            if row is None:  # a lookup settled it first (settle_if_older): the books already hold the answer
                row = await _FIND.fetchrow(connection, gateway=gateway, reference=reference)
        if row is None:
            raise RuntimeError("a sandbox payment vanished from the ledger")
        return row_to(SandboxPayment, row)

    async def settle_if_older(
        self, gateway: str, reference: str, seconds: float, *, status: str, amount_captured: int
    ) -> None:
        """Settle a processing payment whose late answer was lost (its process stopped meanwhile) as
        what was asked of it: ``status`` (captured or authorized) and ``amount_captured``."""
        async with self._db.connection() as connection:
            await _SETTLE_IF_OLDER.execute(
                connection,
                gateway=gateway,
                reference=reference,
                seconds=seconds,
                status=status,
                amount_captured=amount_captured,
            )

    async def find(self, gateway: str, reference: str) -> SandboxPayment | None:
        async with self._db.connection() as connection:
            row = await _FIND.fetchrow(connection, gateway=gateway, reference=reference)
        return None if row is None else row_to(SandboxPayment, row)

    async def find_by_payment_id(self, gateway: str, payment_id: str) -> SandboxPayment | None:
        async with self._db.connection() as connection:
            row = await _FIND_BY_PAYMENT_ID.fetchrow(connection, gateway=gateway, payment_id=payment_id)
        return None if row is None else row_to(SandboxPayment, row)

    async def find_payment(self, payment_id: str) -> SandboxPayment | None:
        async with self._db.connection() as connection:
            row = await _FIND_PAYMENT.fetchrow(connection, payment_id=payment_id)
        return None if row is None else row_to(SandboxPayment, row)

    async def authenticate(self, payment_id: str, *, approved: bool) -> SandboxPayment | None:
        """A waiting payment completed (captured or authorized, as asked) or declined by its customer."""
        async with self._db.connection() as connection:
            row = await _AUTHENTICATE.fetchrow(connection, payment_id=payment_id, approved=approved)
        return None if row is None else row_to(SandboxPayment, row)

    async def operate(
        self, gateway: str, payment_id: str, *, kind: str, amount: int, idempotency_key: str, operation_id: str
    ) -> tuple[SandboxOperation | None, str | None]:
        """Capture, void or refund once per idempotency key. Returns (operation, refusal reason)."""
        async with self._db.transaction() as tx:
            previous = await _PREVIOUS_OPERATION.fetchrow(tx, gateway=gateway, idempotency_key=idempotency_key)
            if previous is not None:
                return row_to(SandboxOperation, previous), None
            row = await _LOCK_BY_PAYMENT_ID.fetchrow(tx, gateway=gateway, payment_id=payment_id)
            if row is None:
                return None, "no_such_payment"
            payment = row_to(SandboxPayment, row)
            refusal, changes = _apply(kind, payment, amount)
            if refusal is not None:
                return None, refusal
            await _OPERATE.execute(
                tx,
                gateway=gateway,
                payment_id=payment_id,
                status=changes.get("status", payment.status),
                amount_captured=changes.get("amount_captured", payment.amount_captured),
                amount_refunded=changes.get("amount_refunded", payment.amount_refunded),
                idempotency_key=idempotency_key,
                kind=kind,
                amount=amount,
                operation_id=operation_id,
            )
            return SandboxOperation(kind, payment_id, amount, operation_id), None


def _apply(kind: str, payment: SandboxPayment, amount: int) -> tuple[str | None, dict[str, Any]]:
    """The processor's own rules for captures, voids and refunds."""
    if kind == "capture":
        if payment.status != "authorized":
            return f"payment_{payment.status}", {}
        if not 0 < amount <= payment.amount:
            return "amount_too_large", {}
        return None, {"status": "captured", "amount_captured": amount}
    if kind == "void":
        # A payment still waiting for its customer is released too: the authentication expired.
        if payment.status not in ("authorized", "requires_action"):
            return f"payment_{payment.status}", {}
        return None, {"status": "voided"}
    if payment.status != "captured":
        return f"payment_{payment.status}", {}
    if not 0 < amount <= payment.amount_captured - payment.amount_refunded:
        return "amount_too_large", {}
    return None, {"amount_refunded": payment.amount_refunded + amount}
