"""The sandbox processor's adapter: a simulated gateway for the embedded mode, tests and benchmarks.

It keeps its own books (:class:`~payorch.gateways.sandbox.books.SandboxBooks`) and reacts to test
tokens the way Stripe's test cards do (DESIGN.md section 5):

=====================  ==============================================================
``tok_visa``           approves (also ``tok_mastercard``, ``tok_amex``)
``tok_fr``, ``tok_br`` approve: Visa cards issued in France, in Brazil
``tok_chargeDeclined`` hard decline ``card_declined``
``tok_insufficient_funds``  hard decline ``insufficient_funds``
``tok_try_again_later``     soft decline ``try_again_later``
``tok_unavailable``    fails before processing (not sent)
``tok_timeout``        hangs past the timeout, then approves (a late success)
``tok_error``          answers 500 after processing (unknown, yet charged)
``tok_threeDSecureRequired``  asks the customer to authenticate (a challenge): the charge waits
                       in ``requires_action`` and ``next_action`` sends the browser to the page
                       payorch serves (``/sandbox/authenticate/{id}``), whose buttons complete or
                       fail the authentication and return to ``return_url``
``tok_threeDSecureOptional``  authenticates without a challenge (frictionless) and approves
``tok_authenticationRequiredOffSession``  approves with the customer present; off-session, the
                       issuer wants them to authenticate (a challenge, as above)
``tok_authenticationRequired``  soft-declines ``authentication_required`` unless the issuer is
                       asked for a challenge (the SCA retry), which it then gives
any other token        refused before processing as an invalid request (not sent)
=====================  ==============================================================
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from payorch.gateways.base import (
    Authentication,
    CardSummary,
    GatewayError,
    GatewayNotification,
    GatewayResult,
    NextAction,
    Outcome,
    PaymentRequest,
    VaultResult,
)
from payorch.gateways.sandbox.books import BookedPayment, PaymentEntry, SandboxBooks
from payorch.gateways.sandbox.config import DEFAULT_PUBLIC_URL
from payorch.ids import new_id


@dataclass(frozen=True, slots=True)
class _TestCard:
    card: CardSummary
    behaviour: str
    decline_code: str | None = None


def _card(brand: str, last4: str, first_digits: str = "424242", country: str = "US") -> CardSummary:
    return CardSummary(brand=brand, last4=last4, exp_month=12, exp_year=2034, bin=first_digits, country=country)


TEST_TOKENS: Final[dict[str, _TestCard]] = {
    "tok_visa": _TestCard(_card("visa", "4242", "42424242"), "approve"),
    "tok_mastercard": _TestCard(_card("mastercard", "4444", "555555"), "approve"),
    "tok_amex": _TestCard(_card("amex", "8431", "378282"), "approve"),
    "tok_fr": _TestCard(_card("visa", "0003", "400000", "FR"), "approve"),
    "tok_br": _TestCard(_card("visa", "0002", "400000", "BR"), "approve"),
    "tok_chargeDeclined": _TestCard(_card("visa", "0002"), "decline", "card_declined"),
    "tok_insufficient_funds": _TestCard(_card("visa", "9995"), "decline", "insufficient_funds"),
    "tok_try_again_later": _TestCard(_card("visa", "0119"), "soft_decline", "try_again_later"),
    "tok_unavailable": _TestCard(_card("visa", "0101"), "unavailable"),
    "tok_timeout": _TestCard(_card("visa", "0077"), "late_success"),
    "tok_error": _TestCard(_card("visa", "0200"), "error_after_processing"),
    "tok_threeDSecureRequired": _TestCard(_card("visa", "3220"), "challenge"),
    "tok_threeDSecureOptional": _TestCard(_card("visa", "3063"), "frictionless"),
    "tok_authenticationRequiredOffSession": _TestCard(_card("visa", "3184"), "challenge_off_session"),
    "tok_authenticationRequired": _TestCard(_card("visa", "3155"), "challenge_when_asked"),
}

AUTHENTICATED: Final = Authentication("succeeded", "2.2.0", liability_shifted=True)
NOT_AUTHENTICATED: Final = Authentication("failed", "2.2.0", liability_shifted=False)
_AUTHENTICATING: Final = frozenset({"challenge", "frictionless", "challenge_off_session", "challenge_when_asked"})
AUTHENTICATION_PATH: Final = "/sandbox/authenticate/"
"""Where payorch serves the sandbox's authentication page (``gateways/sandbox/page.py``)."""

VAULT_PREFIX: Final = "sbxpm_"


def _test_card(token: str) -> _TestCard | None:
    """Vaulted tokens (``sbxpm_<random>_<test token>``) behave like the test token they came from."""
    if token.startswith(VAULT_PREFIX):
        token = token[len(VAULT_PREFIX) :].split("_", 1)[-1]
    return TEST_TOKENS.get(token)


class SandboxGateway:
    """A :class:`~payorch.gateways.base.Gateway` backed by the sandbox's books."""

    def __init__(
        self,
        name: str,
        ledger: SandboxBooks,
        *,
        timeout: float,
        approval_rate: float = 1.0,
        public_url: str = DEFAULT_PUBLIC_URL,
    ) -> None:
        self.name = name
        self._ledger = ledger
        self._approval_rate = approval_rate
        self._page_url = public_url.rstrip("/") + AUTHENTICATION_PATH
        # A late success answers after the caller has given up on it.
        self._late_after = timeout + 0.5
        self._late: set[asyncio.Task[BookedPayment]] = set()

    async def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Charge or authorize per the test token's behaviour."""
        test = _test_card(request.token)
        if test is None:
            # Refused before processing, as Stripe refuses an unknown token: the request's fault.
            return GatewayResult(
                Outcome.NOT_SENT,
                code="invalid_token",
                message="No such token at the sandbox.",
                request_refused=True,
                param="payment_method",
            )
        if test.behaviour == "unavailable":
            return GatewayResult(Outcome.NOT_SENT, code="503", message="Sandbox unavailable; nothing was processed.")
        if _wants_challenge(test.behaviour, request):
            payment, _ = await self._ledger.record(self._payment(request, "requires_action", None))
            return self._result(payment, test.card)
        if test.behaviour == "challenge_when_asked":
            test = _TestCard(test.card, "soft_decline", "authentication_required")
        if test.behaviour == "approve" and not self._approves(request.attempt_id):
            test = _TestCard(test.card, "soft_decline", "issuer_unavailable")
        if test.behaviour in ("decline", "soft_decline"):
            payment, _ = await self._ledger.record(self._payment(request, "declined", test.decline_code))
            outcome = Outcome.HARD_DECLINE if test.behaviour == "decline" else Outcome.SOFT_DECLINE
            return GatewayResult(
                outcome,
                reference=payment.payment_id,
                code=test.decline_code,
                decline_code=payment.decline_code,
                message="The card was declined.",
                card=test.card,
            )
        if test.behaviour == "late_success":
            payment, fresh = await self._ledger.record(self._payment(request, "processing", None))
            if fresh:
                task = asyncio.create_task(self._settle_late(request))
                self._late.add(task)
                task.add_done_callback(self._late.discard)
                payment = await asyncio.shield(task)
            return self._result(payment, test.card)
        payment, _ = await self._ledger.record(self._payment(request, self._approved_status(request), None))
        if test.behaviour == "error_after_processing":
            return GatewayResult(Outcome.UNKNOWN, code="500", message="Sandbox error after processing.")
        return self._result(payment, test.card)

    def _approves(self, attempt_id: str) -> bool:
        if self._approval_rate >= 1:
            return True
        draw = int.from_bytes(hashlib.sha256(attempt_id.encode()).digest()[:4], "big") / 2**32
        return draw < self._approval_rate

    async def verify_credentials(self) -> GatewayResult:
        """The sandbox has no credentials to refuse."""
        return GatewayResult(Outcome.APPROVED, code="verified")

    async def _settle_late(self, request: PaymentRequest) -> BookedPayment:
        await asyncio.sleep(self._late_after)
        status = self._approved_status(request)
        return await self._ledger.settle(
            self.name, request.attempt_id, status=status, amount_captured=request.amount if request.capture else 0
        )

    @staticmethod
    def _approved_status(request: PaymentRequest) -> str:
        return "captured" if request.capture else "authorized"

    def _payment(self, request: PaymentRequest, status: str, decline_code: str | None) -> PaymentEntry:
        captured = request.amount if status == "captured" else 0
        waiting = status == "requires_action"
        return PaymentEntry(
            gateway=self.name,
            reference=request.attempt_id,
            payment_id=new_id("sbx"),
            merchant_id=request.merchant_id,
            charge_id=request.charge_id,
            amount=request.amount,
            currency=request.currency,
            token=request.token,
            status=status,
            amount_captured=captured,
            amount_refunded=0,
            decline_code=decline_code,
            capture=request.capture,
            return_url=request.presence.return_url if waiting else None,
        )

    def _result(self, payment: BookedPayment, card: CardSummary | None) -> GatewayResult:
        test = _test_card(payment.token)
        authenticated = test is not None and test.behaviour in _AUTHENTICATING
        if payment.status == "processing":
            return GatewayResult(Outcome.UNKNOWN, reference=payment.payment_id, message="Still processing.")
        if payment.status == "requires_action":
            action = NextAction(
                gateway="sandbox",
                account=self.name,
                redirect_url=self._page_url + payment.payment_id,
                return_url=payment.return_url,
            )
            return GatewayResult(
                Outcome.ACTION_REQUIRED,
                reference=payment.payment_id,
                code="requires_action",
                message="The customer must authenticate.",
                card=card,
                next_action=action,
                authentication=Authentication("required", "2.2.0"),
            )
        if payment.status == "declined":
            failed_authentication = payment.decline_code == "authentication_failed"
            return GatewayResult(
                Outcome.HARD_DECLINE,
                reference=payment.payment_id,
                code=payment.decline_code,
                decline_code=payment.decline_code,
                message="The customer failed to authenticate." if failed_authentication else None,
                card=card,
                authentication=NOT_AUTHENTICATED if failed_authentication else None,
            )
        return GatewayResult(
            Outcome.APPROVED,
            reference=payment.payment_id,
            code="approved",
            card=card,
            captured=payment.status == "captured",
            authentication=AUTHENTICATED if authenticated else None,
            network_transaction_id=f"sbxntid_{payment.payment_id.removeprefix('sbx_')}",
        )

    async def capture(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Capture ``amount`` of an authorized sandbox payment."""
        return await self._operate(reference, "capture", amount, idempotency_key)

    async def void(self, reference: str, idempotency_key: str) -> GatewayResult:
        """Void an authorized sandbox payment."""
        return await self._operate(reference, "void", 0, idempotency_key)

    async def refund(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Refund part or all of a captured sandbox payment."""
        return await self._operate(reference, "refund", amount, idempotency_key)

    async def _operate(self, payment_id: str, kind: str, amount: int, idempotency_key: str) -> GatewayResult:
        operation, refusal = await self._ledger.operate(
            self.name,
            payment_id,
            kind=kind,
            amount=amount,
            idempotency_key=idempotency_key,
            operation_id=new_id("sbx"),
        )
        if operation is None:
            return GatewayResult(Outcome.HARD_DECLINE, code=refusal, message=f"Sandbox refused the {kind}.")
        return GatewayResult(
            Outcome.APPROVED, reference=operation.operation_id, code="approved", captured=kind == "capture"
        )

    async def lookup(self, request: PaymentRequest) -> GatewayResult:
        """What the sandbox's books say of this attempt; absent means never processed."""
        # A late success whose answer was lost (its process stopped) is settled as what was asked:
        # a capture or an authorization, as the request says.
        await self._ledger.settle_if_older(
            self.name,
            request.attempt_id,
            self._late_after,
            status=self._approved_status(request),
            amount_captured=request.amount if request.capture else 0,
        )
        payment = await self._ledger.find(self.name, request.attempt_id)
        if payment is None:
            return GatewayResult(Outcome.NOT_SENT, message="No payment with this reference.")
        test = _test_card(payment.token)
        return self._result(payment, None if test is None else test.card)

    async def complete_authentication(
        self, request: PaymentRequest, reference: str, details: Mapping[str, str]
    ) -> GatewayResult:
        """Where the payment stands in the books once its customer came back (nothing to send: the
        page recorded the customer's answer); a voided one (expired) holds nothing."""
        del details  # the sandbox's page writes the customer's answer to the books itself
        payment = await self._ledger.find(self.name, request.attempt_id)
        if payment is None or payment.payment_id != reference:
            return GatewayResult(Outcome.NOT_SENT, code="no_such_payment", message="No such payment at the sandbox.")
        if payment.status == "voided":
            return GatewayResult(Outcome.HARD_DECLINE, reference, "canceled", "canceled", "The payment was voided.")
        test = _test_card(payment.token)
        return self._result(payment, None if test is None else test.card)

    async def vault(self, token: str, idempotency_key: str) -> VaultResult:
        """Exchange a test token for a reusable sandbox payment method."""
        test = TEST_TOKENS.get(token)
        if test is None:
            return VaultResult(
                Outcome.NOT_SENT, code="invalid_token", message="No such token at the sandbox.", request_refused=True
            )
        return VaultResult(Outcome.APPROVED, token=f"{VAULT_PREFIX}{secrets.token_hex(8)}_{token}", card=test.card)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayNotification:
        """The sandbox sends no notifications."""
        raise GatewayError("the sandbox gateway sends no webhooks")

    async def aclose(self) -> None:
        # Late successes are settled by the books themselves on the next lookup if cut short here.
        for task in list(self._late):
            task.cancel()


def _wants_challenge(behaviour: str, request: PaymentRequest) -> bool:
    """Whether the issuer of this test card wants the customer to authenticate this payment."""
    if behaviour == "challenge":
        return True
    if behaviour == "challenge_off_session":
        return request.presence.off_session
    if behaviour == "challenge_when_asked":
        return request.presence.request_authentication
    return False
