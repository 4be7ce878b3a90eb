"""The sandbox processor's books, as the sandbox needs them: a Protocol that storage implements.

A real processor keeps its ledger on its own side; the simulated one keeps it in payorch's database
(``sandbox_payments``, ``sandbox_operations``). The sandbox never reaches storage itself: the runtime
passes in an object satisfying :class:`SandboxBooks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class BookedPayment(Protocol):
    """A payment as the books hold it."""

    @property
    def gateway(self) -> str: ...
    @property
    def reference(self) -> str: ...
    @property
    def payment_id(self) -> str: ...
    @property
    def charge_id(self) -> str: ...
    @property
    def token(self) -> str: ...
    @property
    def status(self) -> str:
        """processing, requires_action (waiting for its customer), declined, authorized, captured or voided."""
        ...

    @property
    def decline_code(self) -> str | None: ...
    @property
    def amount(self) -> int: ...
    @property
    def currency(self) -> str: ...
    @property
    def return_url(self) -> str | None:
        """Where the authentication page sends the customer's browser back to."""
        ...


class BookedOperation(Protocol):
    """A capture, void or refund as the books hold it."""

    @property
    def kind(self) -> str: ...
    @property
    def operation_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class PaymentEntry:
    """A payment the sandbox asks its books to record; the books read these fields by name."""

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
    """What an authenticated payment becomes: captured, or only authorized."""
    return_url: str | None = None


class SandboxBooks(Protocol):
    """Each call is its own transaction, as it would be inside a real processor."""

    async def record(self, payment: Any) -> tuple[BookedPayment, bool]:
        """Record a :class:`PaymentEntry` keyed by (gateway, reference); a repeat returns the first
        one and False. (Typed ``Any``: a store reads the entry's fields by name into its own type.)"""
        ...

    async def settle(self, gateway: str, reference: str, *, status: str, amount_captured: int) -> BookedPayment:
        """Finish a payment that was processing (a late success)."""
        ...

    async def settle_if_older(
        self, gateway: str, reference: str, seconds: float, *, status: str, amount_captured: int
    ) -> None:
        """Settle a processing payment older than ``seconds`` as what was asked of it (``status``:
        captured or authorized, and ``amount_captured``): its late answer was lost with its process."""
        ...

    async def find(self, gateway: str, reference: str) -> BookedPayment | None: ...

    async def find_payment(self, payment_id: str) -> BookedPayment | None:
        """A payment by its own id, whichever sandbox made it (the authentication page's look-up)."""
        ...

    async def authenticate(self, payment_id: str, *, approved: bool) -> BookedPayment | None:
        """The simulated customer finished authenticating: a payment waiting for it becomes what was
        asked (captured or authorized) or is declined ``authentication_failed``. None when no payment
        waits under ``payment_id`` (unknown, finished, or voided when it expired)."""
        ...

    async def operate(
        self, gateway: str, payment_id: str, *, kind: str, amount: int, idempotency_key: str, operation_id: str
    ) -> tuple[BookedOperation | None, str | None]:
        """Capture, void or refund once per idempotency key. Returns (operation, refusal reason)."""
        ...
