"""The contract suite's drivers for the Stripe and Adyen fakes (one HTTP core, one ledger shape),
and the signed notifications each gateway sends."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import ClassVar

import stripe
from tests.fakes.adyen_server import encrypted_card
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
from tests.fakes.stripe_server import Fault, LedgerCharge

from payorch.gateways.base import Gateway, Outcome

WEBHOOK_SECRET = "whsec_test_secret"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


def stripe_event(timestamp: int | None = None, secret: str = WEBHOOK_SECRET) -> tuple[dict[str, str], bytes]:
    """A ``payment_intent.succeeded`` event with its ``Stripe-Signature`` header."""
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_1",
                    "object": "payment_intent",
                    "amount_received": 1500,
                    "metadata": {"attempt_id": "att_1"},
                }
            },
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return {"Stripe-Signature": header}, payload.encode()


def adyen_notification(key_hex: str = HMAC_KEY, *, value: int = 2500) -> bytes:
    """An AUTHORISATION notification item signed with ``key_hex``."""
    item: dict[str, object] = {
        "pspReference": "PSP000001",
        "originalReference": "",
        "merchantAccountCode": "PayorchECOM",
        "merchantReference": "att_1",
        "amount": {"value": value, "currency": "EUR"},
        "eventCode": "AUTHORISATION",
        "success": "true",
        "eventDate": "2024-01-01T00:00:00+01:00",
    }
    # The signing string written out by hand, independently of the adapter's code.
    signing = f"PSP000001::PayorchECOM:att_1:{value}:EUR:AUTHORISATION:true"
    digest = hmac.new(bytes.fromhex(key_hex), signing.encode(), hashlib.sha256).digest()
    item["additionalData"] = {"hmacSignature": base64.b64encode(digest).decode()}
    return json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}).encode()


@dataclass
class _LedgerDriver(GatewayDriver):
    canceled_status: ClassVar[str]

    def booked(self, attempt_id: str) -> list[Booked]:
        return [self._booked(charge) for charge in self.fake.charges_for(attempt_id)]

    def booked_payment(self, reference: str) -> Booked:
        charge = self.fake.find(reference)
        assert charge is not None
        return self._booked(charge)

    def _booked(self, charge: LedgerCharge) -> Booked:
        voided = charge.status == self.canceled_status
        return Booked(
            reference=charge.reference,
            key=charge.idempotency_key,
            amount_captured=charge.amount_captured,
            refunds=list(charge.refunds),
            holds_money=charge.authorized and not voided,
            voided=voided,
        )

    def inject(self, fault: str, *, on: str = "authorize", token: str | None = None) -> None:
        del on  # the fault hits the very next request, whichever call makes it
        self.fake.inject(Fault(fault), token=None if token is None else self._fault_key(token))

    def _fault_key(self, token: str) -> str:
        return token

    def release(self) -> None:
        self.fake.release()


@dataclass
class StripeDriver(_LedgerDriver):
    kind: ClassVar[str] = "stripe"
    amount: ClassVar[int] = 1500
    currency: ClassVar[str] = "usd"
    approve_token: ClassVar[str] = "tok_visa"
    other_approve_token: ClassVar[str] = "tok_mastercard"
    approved_card: ClassVar[tuple[str, str]] = ("visa", "4242")
    declines: ClassVar[tuple[Decline, ...]] = (
        Decline("tok_chargeDeclined", 1500, Outcome.HARD_DECLINE, "card_declined"),
        Decline("tok_chargeDeclinedInsufficientFunds", 1500, Outcome.HARD_DECLINE, "insufficient_funds"),
        Decline("tok_chargeDeclinedLostCard", 1500, Outcome.HARD_DECLINE, "lost_card"),
        Decline("tok_chargeDeclinedStolenCard", 1500, Outcome.HARD_DECLINE, "stolen_card"),
        Decline("tok_chargeDeclinedFraudulent", 1500, Outcome.HARD_DECLINE, "fraudulent"),
        Decline("tok_chargeDeclinedExpiredCard", 1500, Outcome.HARD_DECLINE, "expired_card"),
        Decline("tok_chargeDeclinedIncorrectCvc", 1500, Outcome.HARD_DECLINE, "incorrect_cvc"),
        Decline("tok_chargeDeclinedProcessingError", 1500, Outcome.SOFT_DECLINE, "processing_error"),
        Decline("tok_chargeDeclinedTryAgainLater", 1500, Outcome.SOFT_DECLINE, "try_again_later"),
    )
    insufficient_funds: ClassVar[tuple[str, int]] = ("tok_chargeDeclinedInsufficientFunds", 1500)
    faults: ClassVar[dict[str, FaultCase]] = {
        "hang": FaultCase(UNKNOWN, charged=False, code="ReadTimeout"),
        "reset_before_charge": FaultCase(UNKNOWN, charged=False),
        "reset_after_charge": FaultCase(UNKNOWN, charged=True),
        "error_500_after_charge": FaultCase(UNKNOWN, charged=True),
        "garbage_after_charge": FaultCase(UNKNOWN, charged=True),
        "late_success": FaultCase(UNKNOWN, charged=True),
        # Stripe's 503 carries Stripe-Should-Retry: its statement that nothing ran.
        "error_503_before_charge": FaultCase(NOT_SENT, charged=False),
        "rate_limited": FaultCase(NOT_SENT, charged=False),
    }
    unusable_token: ClassVar[str] = "pm_does_not_exist"
    unusable_token_result: ClassVar[Expect] = Expect(NOT_SENT, "resource_missing")
    refusals: ClassVar[tuple[Refusal, ...]] = (
        Refusal("pm_does_not_exist", "resource_missing", "payment_method"),
        Refusal("tok_nonexistent", "resource_missing", "payment_method"),
    )
    capture_above_authorized: ClassVar[Expect] = Expect(NOT_SENT, "payment_intent_unexpected_state")
    capture_unknown_payment: ClassVar[Expect] = Expect(NOT_SENT, "resource_missing")
    refund_too_large: ClassVar[Expect] = Expect(NOT_SENT, "amount_too_large")
    void_captured: ClassVar[Expect] = Expect(NOT_SENT, "payment_intent_unexpected_state")
    wrong_credentials: ClassVar[tuple[dict[str, str], Expect]] = (
        {"api_key": "sk_test_wrong"},
        Expect(NOT_SENT, "invalid_request_error"),
    )
    connect_refused_code: ClassVar[str] = "ConnectError"
    vault_source: ClassVar[str] = "tok_mastercard"
    vault_card: ClassVar[tuple[str, str]] = ("mastercard", "4444")
    vault_refusals: ClassVar[tuple[tuple[str, Expect], ...]] = (
        ("nonce-from-braintree", Expect(NOT_SENT, "unsupported_token")),
        ("tok_nonexistent", Expect(NOT_SENT, "resource_missing")),
    )
    capture_confirms: ClassVar[bool] = True
    replays_by_key: ClassVar[bool] = True
    lookup_replays: ClassVar[bool] = True
    in_flight_code: ClassVar[str | None] = "idempotency_key_in_use"
    notification_secret: ClassVar[str | None] = "webhook_secret"
    unverified: ClassVar[str] = "unverifiable Stripe webhook"
    canceled_status: ClassVar[str] = "canceled"
    challenge_token: ClassVar[str | None] = "tok_threeDSecure2Required"
    frictionless_token: ClassVar[str | None] = "tok_threeDSecureOptional"

    def config_fields(self) -> dict[str, object]:
        return {"base_url": self.fake.url, "api_key": self.fake.api_key, "webhook_secret": WEBHOOK_SECRET}

    def authenticate(self, reference: str, *, succeed: bool) -> dict[str, str]:
        assert self.fake.authenticate(reference, succeed=succeed), f"{reference} was not waiting for its customer"
        return {}  # Stripe keeps the whole state on the PaymentIntent

    async def signed_notification(self, adapter: Gateway, *, by_us: bool = True) -> SignedNotification:
        del adapter  # a Stripe event needs nothing on the fake's side
        headers, body = stripe_event(secret=WEBHOOK_SECRET if by_us else "whsec_someone_else")
        return SignedNotification(headers, body, Notified("payment.succeeded", "att_1", "pi_1", 1500, "evt_1"))

    def tamper(self, body: bytes) -> bytes:
        return body.replace(b"1500", b"9500")


_ADYEN_REFUSALS = (
    ("DECLINED", Outcome.HARD_DECLINE, "card_declined"),
    ("NOT_ENOUGH_BALANCE", Outcome.HARD_DECLINE, "insufficient_funds"),
    ("BLOCK_CARD", Outcome.HARD_DECLINE, "pickup_card"),
    ("CARD_EXPIRED", Outcome.HARD_DECLINE, "expired_card"),
    ("INVALID_CARD", Outcome.HARD_DECLINE, "incorrect_number"),
    ("CVC_DECLINED", Outcome.HARD_DECLINE, "incorrect_cvc"),
    ("FRAUD", Outcome.HARD_DECLINE, "fraudulent"),
    ("ISSUER_UNAVAILABLE", Outcome.SOFT_DECLINE, "issuer_not_available"),
    ("ACQUIRER_ERROR", Outcome.SOFT_DECLINE, "processing_error"),
    ("ERROR", Outcome.SOFT_DECLINE, "processing_error"),
)


@dataclass
class AdyenDriver(_LedgerDriver):
    kind: ClassVar[str] = "adyen"
    amount: ClassVar[int] = 2500
    currency: ClassVar[str] = "eur"
    approve_token: ClassVar[str] = encrypted_card()
    other_approve_token: ClassVar[str] = encrypted_card("A. Other", number_hint="5")
    approved_card: ClassVar[tuple[str, str]] = ("visa", "1111")
    declines: ClassVar[tuple[Decline, ...]] = tuple(
        Decline(encrypted_card(holder), 2500, outcome, decline_code)
        for holder, outcome, decline_code in _ADYEN_REFUSALS
    )
    insufficient_funds: ClassVar[tuple[str, int]] = (encrypted_card("NOT_ENOUGH_BALANCE"), 2500)
    faults: ClassVar[dict[str, FaultCase]] = {
        "hang": FaultCase(UNKNOWN, charged=False, code="ReadTimeout"),
        "reset_before_charge": FaultCase(UNKNOWN, charged=False),
        "reset_after_charge": FaultCase(UNKNOWN, charged=True),
        "error_500_after_charge": FaultCase(UNKNOWN, charged=True),
        "garbage_after_charge": FaultCase(UNKNOWN, charged=True),
        "late_success": FaultCase(UNKNOWN, charged=True),
        # Adyen's 503 says nothing about what ran, so it is unknown; lookup then settles it.
        "error_503_before_charge": FaultCase(UNKNOWN, charged=False),
        "rate_limited": FaultCase(NOT_SENT, charged=False),
    }
    # JSON the fake cannot decrypt: Adyen refuses it (422) before processing.
    unusable_token: ClassVar[str] = json.dumps({"type": "scheme", "encryptedCardNumber": "not-encrypted"})
    unusable_token_result: ClassVar[Expect] = Expect(NOT_SENT, "174")
    refusals: ClassVar[tuple[Refusal, ...]] = (
        Refusal(json.dumps({"type": "scheme", "encryptedCardNumber": "not-encrypted"}), "174", "payment_method"),
        Refusal("not an Adyen payment method", "invalid_token", "payment_method"),
    )
    capture_above_authorized: ClassVar[Expect] = Expect(NOT_SENT, "137")
    capture_unknown_payment: ClassVar[Expect] = Expect(NOT_SENT, "167")
    refund_too_large: ClassVar[Expect] = Expect(NOT_SENT, "137")
    void_captured: ClassVar[Expect] = Expect(NOT_SENT, "167")
    wrong_credentials: ClassVar[tuple[dict[str, str], Expect]] = ({"api_key": "AQE_wrong"}, Expect(NOT_SENT, "000"))
    connect_refused_code: ClassVar[str] = "ConnectError"
    vault_source: ClassVar[str] = encrypted_card(number_hint="5")
    vault_card: ClassVar[tuple[str, str]] = ("mc", "4444")
    vault_refusals: ClassVar[tuple[tuple[str, Expect], ...]] = (
        (encrypted_card("DECLINED"), Expect(Outcome.HARD_DECLINE)),
    )
    capture_confirms: ClassVar[bool] = False  # "received": confirmed by a CAPTURE notification
    replays_by_key: ClassVar[bool] = True
    lookup_replays: ClassVar[bool] = True
    in_flight_code: ClassVar[str | None] = "704"
    notification_secret: ClassVar[str | None] = "webhook_secret"
    unverified: ClassVar[str] = "HMAC signature does not match"
    canceled_status: ClassVar[str] = "cancelled"
    challenge_token: ClassVar[str | None] = encrypted_card("CHALLENGE")
    frictionless_token: ClassVar[str | None] = encrypted_card("FRICTIONLESS")

    def authenticate(self, reference: str, *, succeed: bool) -> dict[str, str]:
        return {"redirectResult": self.fake.authenticate(reference, succeed=succeed)}

    def config_fields(self) -> dict[str, object]:
        return {
            "base_url": self.fake.base_url,
            "api_key": self.fake.api_key,
            "merchant_account": self.fake.merchant_account,
            "webhook_secret": HMAC_KEY,
        }

    def closed_base_url(self) -> str:
        return f"{super().closed_base_url()}/v71"

    def _fault_key(self, token: str) -> str:
        holder: str = json.loads(token)["holderName"]  # what the fake keys per-card faults by
        return holder

    async def signed_notification(self, adapter: Gateway, *, by_us: bool = True) -> SignedNotification:
        del adapter  # an Adyen notification needs nothing on the fake's side
        body = adyen_notification(HMAC_KEY if by_us else "00" * 32)
        expected = Notified("payment.authorized", "att_1", "PSP000001", 2500, "adyen:PSP000001:AUTHORISATION:true")
        return SignedNotification({}, body, expected)

    def tamper(self, body: bytes) -> bytes:
        return body.replace(b'"value": 2500', b'"value": 9900')
