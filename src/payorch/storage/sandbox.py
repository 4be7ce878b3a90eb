"""The sandbox processor's own books (what a real gateway would keep on its side): the only SQL for them.

Reached only through :class:`SandboxLedger`, which the sandbox gateway is given at construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.dialects.postgresql import insert

from payorch.storage.engine import SessionFactory, driver_connection, unit_of_work
from payorch.storage.tables import sandbox_operations, sandbox_payments


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


@dataclass(frozen=True, slots=True)
class SandboxOperation:
    kind: str
    payment_id: str
    amount: int
    operation_id: str


def _payment(row: Any) -> SandboxPayment:
    """From a SQLAlchemy row or an asyncpg record."""
    mapping = getattr(row, "_mapping", row)
    return SandboxPayment(**{name: mapping[name] for name in SandboxPayment.__slots__})


_PAYMENT_COLUMNS = ", ".join(SandboxPayment.__slots__)
# A new payment, or the one already recorded under (gateway, reference): one statement, one round
# trip, its own transaction. The SELECT sees the statement's snapshot, so a twin committed by a
# concurrent request after it began is not seen: then nothing comes back and ``record`` looks again.
_RECORD = f"""
    WITH fresh AS (
        INSERT INTO sandbox_payments ({_PAYMENT_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
        ON CONFLICT (gateway, reference) DO NOTHING
        RETURNING {_PAYMENT_COLUMNS}
    )
    SELECT {_PAYMENT_COLUMNS}, true AS fresh FROM fresh
    UNION ALL
    SELECT {_PAYMENT_COLUMNS}, false AS fresh FROM sandbox_payments
     WHERE gateway = $1 AND reference = $2 AND NOT EXISTS (SELECT 1 FROM fresh)
    """  # noqa: S608 - column names from the dataclass above; every value is bound


class SandboxLedger:
    """Each call is its own transaction, as it would be inside a real processor."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions

    async def record(self, payment: SandboxPayment) -> tuple[SandboxPayment, bool]:
        """Insert a payment keyed by (gateway, reference); a repeat returns the first one and False."""
        async with driver_connection(self._sessions) as connection:
            row = await connection.fetchrow(_RECORD, *(getattr(payment, name) for name in SandboxPayment.__slots__))
        if row is not None:
            return _payment(row), bool(row["fresh"])
        async with unit_of_work(self._sessions) as session:
            values = {name: getattr(payment, name) for name in SandboxPayment.__slots__}
            inserted = (
                await session.execute(
                    insert(sandbox_payments)
                    .values(**values)
                    .on_conflict_do_nothing(index_elements=["gateway", "reference"])
                    .returning(sandbox_payments)
                )
            ).one_or_none()
            if inserted is not None:
                return _payment(inserted), True
            existing = (
                await session.execute(
                    select(sandbox_payments).where(
                        sandbox_payments.c.gateway == payment.gateway,
                        sandbox_payments.c.reference == payment.reference,
                    )
                )
            ).one()
            return _payment(existing), False

    async def settle(self, gateway: str, reference: str, *, status: str, amount_captured: int) -> SandboxPayment:
        """Finish a payment that was processing (the late success of ``tok_timeout``)."""
        async with unit_of_work(self._sessions) as session:
            row = (
                await session.execute(
                    update(sandbox_payments)
                    .where(
                        sandbox_payments.c.gateway == gateway,
                        sandbox_payments.c.reference == reference,
                        sandbox_payments.c.status == "processing",
                    )
                    .values(status=status, amount_captured=amount_captured, updated_at=func.now())
                    .returning(sandbox_payments)
                )
            ).one_or_none()
            if row is None:
                # A lookup settled it first (settle_if_older): the books already hold the answer.
                row = (
                    await session.execute(
                        select(sandbox_payments).where(
                            sandbox_payments.c.gateway == gateway, sandbox_payments.c.reference == reference
                        )
                    )
                ).one()
            return _payment(row)

    async def settle_if_older(self, gateway: str, reference: str, seconds: float) -> None:
        """Settle a processing payment whose late answer was lost (its process stopped meanwhile)."""
        async with unit_of_work(self._sessions) as session:
            await session.execute(
                update(sandbox_payments)
                .where(
                    sandbox_payments.c.gateway == gateway,
                    sandbox_payments.c.reference == reference,
                    sandbox_payments.c.status == "processing",
                    sandbox_payments.c.created_at < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, seconds),
                )
                .values(
                    status=case((sandbox_payments.c.amount_captured > 0, "captured"), else_="authorized"),
                    updated_at=func.now(),
                )
            )

    async def find(self, gateway: str, reference: str) -> SandboxPayment | None:
        async with unit_of_work(self._sessions) as session:
            row = (
                await session.execute(
                    select(sandbox_payments).where(
                        sandbox_payments.c.gateway == gateway, sandbox_payments.c.reference == reference
                    )
                )
            ).one_or_none()
            return None if row is None else _payment(row)

    async def find_by_payment_id(self, gateway: str, payment_id: str) -> SandboxPayment | None:
        async with unit_of_work(self._sessions) as session:
            row = (
                await session.execute(
                    select(sandbox_payments).where(
                        sandbox_payments.c.gateway == gateway, sandbox_payments.c.payment_id == payment_id
                    )
                )
            ).one_or_none()
            return None if row is None else _payment(row)

    async def operate(
        self, gateway: str, payment_id: str, *, kind: str, amount: int, idempotency_key: str, operation_id: str
    ) -> tuple[SandboxOperation | None, str | None]:
        """Capture, void or refund once per idempotency key. Returns (operation, refusal reason)."""
        async with unit_of_work(self._sessions) as session:
            previous = (
                await session.execute(
                    select(sandbox_operations).where(
                        sandbox_operations.c.gateway == gateway,
                        sandbox_operations.c.idempotency_key == idempotency_key,
                    )
                )
            ).one_or_none()
            if previous is not None:
                return SandboxOperation(
                    previous.kind, previous.payment_id, previous.amount, previous.operation_id
                ), None
            row = (
                await session.execute(
                    select(sandbox_payments)
                    .where(sandbox_payments.c.gateway == gateway, sandbox_payments.c.payment_id == payment_id)
                    .with_for_update()
                )
            ).one_or_none()
            if row is None:
                return None, "no_such_payment"
            refusal, changes = _apply(kind, _payment(row), amount)
            if refusal is not None:
                return None, refusal
            await session.execute(
                update(sandbox_payments)
                .where(sandbox_payments.c.gateway == gateway, sandbox_payments.c.payment_id == payment_id)
                .values(updated_at=func.now(), **changes)
            )
            await session.execute(
                insert(sandbox_operations).values(
                    gateway=gateway,
                    idempotency_key=idempotency_key,
                    payment_id=payment_id,
                    kind=kind,
                    amount=amount,
                    operation_id=operation_id,
                )
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
        if payment.status != "authorized":
            return f"payment_{payment.status}", {}
        return None, {"status": "voided"}
    if payment.status != "captured":
        return f"payment_{payment.status}", {}
    if not 0 < amount <= payment.amount_captured - payment.amount_refunded:
        return "amount_too_large", {}
    return None, {"amount_refunded": payment.amount_refunded + amount}
