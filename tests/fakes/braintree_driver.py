"""The contract suite's driver for the Braintree fake (XML gateway API, driven by the real SDK)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tests.fakes.braintree_server import Fault, Transaction
from tests.fakes.drivers import (
    NOT_SENT,
    UNKNOWN,
    Booked,
    Decline,
    Expect,
    FaultCase,
    GatewayDriver,
    Notified,
    Refusal,
    SignedNotification,
)

from payorch.gateways.base import Gateway, Outcome
from payorch.money import from_major_string

_HARD, _SOFT = Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE
_CAPTURED = frozenset({"submitted_for_settlement", "settling", "settled"})
_OPERATIONS = {"authorize": "sale", "lookup": "search_ids", "vault": "customer_create"}
"""The fake's operation each adapter call starts with."""


@dataclass
class BraintreeDriver(GatewayDriver):
    kind: ClassVar[str] = "braintree"
    amount: ClassVar[int] = 1000
    currency: ClassVar[str] = "usd"
    approve_token: ClassVar[str] = "fake-valid-nonce"
    other_approve_token: ClassVar[str] = "fake-valid-mastercard-nonce"
    approved_card: ClassVar[tuple[str, str]] = ("visa", "1111")
    # Amounts from 2000.00 to 3000.99 decline with that processor code at Braintree's sandbox.
    declines: ClassVar[tuple[Decline, ...]] = (
        Decline("fake-valid-nonce", 200100, _HARD, "insufficient_funds", "2001"),
        Decline("fake-valid-nonce", 200000, _SOFT, "do_not_honor", "2000"),
        Decline("fake-valid-nonce", 203800, _SOFT, "generic_decline", "2038"),
        Decline("fake-valid-nonce", 204600, _SOFT, "generic_decline", "2046"),
        Decline("fake-valid-nonce", 200400, _HARD, "expired_card", "2004"),
        Decline("fake-valid-nonce", 300000, _SOFT, "try_again_later", "3000"),
        Decline("fake-processor-declined-visa-nonce", 1000, _SOFT, "do_not_honor", "2000"),
        Decline("fake-processor-failure-visa-nonce", 1000, _SOFT, "try_again_later", "3000"),
        Decline("fake-gateway-rejected-fraud-nonce", 1000, _HARD, "fraudulent", "fraud"),
        Decline("fake-gateway-rejected-cvv-nonce", 1000, _HARD, "incorrect_cvc", "cvv"),
        Decline("fake-gateway-rejected-avs-nonce", 1000, _HARD, "incorrect_zip", "avs"),
        Decline("fake-gateway-rejected-duplicate-nonce", 1000, _HARD, "duplicate_transaction", "duplicate"),
        Decline("fake-gateway-rejected-risk-threshold-nonce", 1000, _HARD, "fraudulent", "risk_threshold"),
    )
    # Validation refusals, not declines (issue 18; they were hard declines "invalid_payment_method").
    refusals: ClassVar[tuple[Refusal, ...]] = (
        Refusal("fake-consumed-nonce", "91564", "payment_method"),
        Refusal("not-a-nonce-at-all", "91565", "payment_method"),
    )
    insufficient_funds: ClassVar[tuple[str, int]] = ("fake-valid-nonce", 200100)
    faults: ClassVar[dict[str, FaultCase]] = {
        "hang": FaultCase(UNKNOWN, charged=False, code="timeout"),
        "reset_before_charge": FaultCase(UNKNOWN, charged=False),
        "reset_after_charge": FaultCase(UNKNOWN, charged=True),
        "error_500_after_charge": FaultCase(UNKNOWN, charged=True),
        "garbage_after_charge": FaultCase(UNKNOWN, charged=True),
        "missing_fields_after_charge": FaultCase(UNKNOWN, charged=True),
        # The fake processes the held sale once the client has given up on it.
        "late_success": FaultCase(UNKNOWN, charged=True),
        "error_503_before_charge": FaultCase(NOT_SENT, charged=False),
        "rate_limited": FaultCase(NOT_SENT, charged=False),
    }
    unusable_token: ClassVar[str] = "not-a-nonce-at-all"
    # Refused by validation before any transaction existed (issue 18: it was a hard decline).
    unusable_token_result: ClassVar[Expect] = Expect(NOT_SENT, "91565")
    capture_above_authorized: ClassVar[Expect] = Expect(_HARD, "91522")
    capture_unknown_payment: ClassVar[Expect] = Expect(NOT_SENT, "not_found_error")
    refund_too_large: ClassVar[Expect] = Expect(_HARD, "91521")
    void_captured: ClassVar[Expect] = Expect(_HARD, "91504")
    wrong_credentials: ClassVar[tuple[dict[str, str], Expect]] = (
        {"private_key": "wrong"},
        Expect(NOT_SENT, "authentication_error"),
    )
    connect_refused_code: ClassVar[str] = "connect_failed"
    vault_source: ClassVar[str] = "fake-valid-mastercard-nonce"
    vault_card: ClassVar[tuple[str, str]] = ("mastercard", "4444")
    vault_refusals: ClassVar[tuple[tuple[str, Expect], ...]] = (
        ("fake-processor-declined-visa-nonce", Expect(_SOFT, "2000")),
        ("fake-gateway-rejected-fraud-nonce", Expect(_HARD, "fraud")),
        ("not-a-nonce", Expect(_HARD, "93108")),
        # A spent nonce with no earlier vault under the same key to fall back on.
        ("fake-consumed-nonce", Expect(_HARD, "93107")),
    )
    capture_confirms: ClassVar[bool] = True
    replays_by_key: ClassVar[bool] = False  # sales and refunds carry an order id, not an idempotency key
    lookup_replays: ClassVar[bool] = False  # lookup searches by order id
    in_flight_code: ClassVar[str | None] = None
    notification_secret: ClassVar[str | None] = None  # private_key signs them, and is always set
    unverified: ClassVar[str] = "unverifiable Braintree notification"

    def config_fields(self) -> dict[str, object]:
        return {
            "base_url": self.fake.url,
            "merchant_account": self.fake.merchant_id,
            "public_key": self.fake.public_key,
            "private_key": self.fake.private_key,
        }

    def booked(self, attempt_id: str) -> list[Booked]:
        return [self._booked(t) for t in self.fake.transactions_for(attempt_id) if t.type == "sale"]

    def booked_payment(self, reference: str) -> Booked:
        return self._booked(self.fake.transaction(reference))

    def _booked(self, sale: Transaction) -> Booked:
        refunds = [t.amount for t in self.fake.ledger if t.refunded_transaction_id == sale.id]
        return Booked(
            reference=sale.id,
            key=sale.order_id,
            amount_captured=self._minor(sale.amount) if sale.status in _CAPTURED else 0,
            refunds=[self._minor(amount) for amount in refunds],
            holds_money=sale.holds_money,
            voided=sale.status == "voided",
        )

    def _minor(self, amount: object) -> int:
        return from_major_string(str(amount), self.currency)

    def inject(self, fault: str, *, on: str = "authorize", token: str | None = None) -> None:
        self.fake.inject(Fault(fault), operation=_OPERATIONS[on], nonce=token)

    def request_count(self) -> int:
        return len(self.fake.requests)

    def settle(self, reference: str) -> None:
        self.fake.settle(reference)

    async def signed_notification(self, adapter: Gateway, *, by_us: bool = True) -> SignedNotification:
        request = self.request(amount=2599)
        sale = await adapter.authorize(request)
        body = self.fake.webhook("transaction_settled", str(sale.reference), private_key=None if by_us else "not_ours")
        expected = Notified("payment.succeeded", request.attempt_id, sale.reference, 2599)
        return SignedNotification({"content-type": "application/x-www-form-urlencoded"}, body, expected)

    def tamper(self, body: bytes) -> bytes:
        tampered = body.replace(b"bt_payload=P", b"bt_payload=Q", 1)
        assert tampered != body
        return tampered
