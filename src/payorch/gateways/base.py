"""The one seam between payorch and a payment gateway.

Every adapter implements :class:`Gateway` and answers with :class:`GatewayResult`; its package
declares what it can do as :class:`Capabilities`. An adapter never raises a gateway-specific
exception past itself: a network failure, a malformed answer or an SDK error becomes an ``Outcome``
that says what is known about whether money moved. The executor decides what to do next from the outcome alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Outcome(StrEnum):
    """What a gateway call tells us about money having moved."""

    APPROVED = "approved"
    """Charged, authorized, captured, voided or refunded as asked."""
    HARD_DECLINE = "hard_decline"
    """The customer's card said no for good: never retried, never failed over."""
    SOFT_DECLINE = "soft_decline"
    """The issuer said no for now; cascaded only where configured."""
    NOT_SENT = "not_sent"
    """Provably never executed (refused connection, 503 stating nothing ran, breaker open, not found on lookup)."""
    UNKNOWN = "unknown"
    """It may have executed: read timeout, reset after sending, 5xx, garbage, still in flight."""
    ACTION_REQUIRED = "action_required"
    """The issuer wants the customer to authenticate (3-D Secure): nothing has moved yet, and the
    gateway holds the payment open until the customer comes back (``GatewayResult.next_action``)."""


@dataclass(frozen=True, slots=True)
class CardSummary:
    """What payorch may keep of a card: never the number."""

    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    bin: str | None = None
    """The first 6 or 8 digits, where the gateway reports them (``gateways.cards.card_bin``)."""
    country: str | None = None
    """The issuing country, ISO 3166-1 alpha-2 (``gateways.cards.issuing_country``)."""


@dataclass(frozen=True, slots=True)
class CustomerPresence:
    """Who is there to authenticate, and what the charge means for the card's future use.

    Every field is passed to the gateway as the merchant gave it (``browser_info`` and
    ``authentication_data`` are the gateway's own objects, e.g. Adyen's); none is a secret.
    """

    return_url: str | None = None
    """Where the customer's browser is sent back to after authenticating."""
    browser_info: Mapping[str, object] | None = None
    authentication_data: Mapping[str, object] | None = None
    setup_future_usage: bool = False
    """The customer is present and agrees to later charges without them (a stored credential)."""
    off_session: bool = False
    """A merchant-initiated charge: no customer is present to authenticate."""
    network_transaction_id: str | None = None
    """The card network's id of the customer-present charge that set the credential up (sent on
    merchant-initiated charges)."""
    request_authentication: bool = False
    """Ask the issuer for a challenge (the SCA retry after an ``authentication_required`` decline)."""


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """One attempt at one gateway. ``attempt_id`` is the gateway idempotency key / order reference."""

    attempt_id: str
    merchant_id: str
    charge_id: str
    amount: int
    currency: str
    token: str
    capture: bool = True
    description: str | None = None
    presence: CustomerPresence = field(default_factory=CustomerPresence)


@dataclass(frozen=True, slots=True)
class NextAction:
    """What the customer's frontend does to authenticate, passed through as the gateway gave it.

    Exactly one of ``redirect_url`` (send the browser there; it comes back to ``return_url``) and
    ``sdk`` (hand it to the gateway's own frontend SDK: Stripe.js ``handleNextAction`` takes a
    ``client_secret``, Adyen's Drop-in an ``action``).
    """

    gateway: str
    """The gateway's kind (whose frontend SDK understands ``sdk``)."""
    account: str
    """The configured gateway (account) the charge is bound to."""
    redirect_url: str | None = None
    return_url: str | None = None
    sdk: Mapping[str, object] | None = None

    def render(self) -> dict[str, object]:
        """The public ``next_action`` object (docs/authentication.md)."""
        if self.redirect_url is not None:
            return {
                "type": "redirect_to_url",
                "redirect_to_url": {"url": self.redirect_url, "return_url": self.return_url},
            }
        sdk = {"gateway": self.gateway, "account": self.account, **(self.sdk or {})}
        return {"type": "gateway_sdk", "gateway_sdk": sdk}


@dataclass(frozen=True, slots=True)
class Authentication:
    """How the customer authenticated (3-D Secure), as the charge shows it."""

    status: str
    """succeeded, attempted, failed, not_required, required (still waiting), unavailable"""
    version: str | None = None
    liability_shifted: bool | None = None

    def render(self) -> dict[str, object]:
        return {"status": self.status, "version": self.version, "liability_shifted": self.liability_shifted}


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """The shared answer of every gateway operation."""

    outcome: Outcome
    reference: str | None = None
    """The gateway's own id for the payment (or refund)."""
    code: str | None = None
    """The raw code the gateway gave, for operators."""
    decline_code: str | None = None
    """A normalised decline code (insufficient_funds, card_declined, ...) when declined."""
    message: str | None = None
    card: CardSummary | None = None
    captured: bool = False
    """True when the payment was captured (sale) rather than only authorized."""
    next_action: NextAction | None = None
    """With ``ACTION_REQUIRED``: what the customer must do."""
    authentication: Authentication | None = None
    """The customer authentication's outcome, when the gateway reports one."""
    network_transaction_id: str | None = None
    """The card network's id for this payment, kept for later merchant-initiated charges."""
    request_refused: bool = False
    """NOT_SENT because the gateway refused this request as invalid (a bad or unknown token, bad
    parameters): it says nothing about the gateway's health, so circuit breakers do not count it as a
    failure. A refused API key (401/403) is not this: it fails every request, and does count."""
    param: str | None = None
    """For a refused request: the payorch request field the refusal is about (``payment_method``,
    ``amount``, ``currency``, ``description``), where the gateway's answer names it."""

    @property
    def charged(self) -> bool:
        return self.outcome is Outcome.APPROVED


@dataclass(frozen=True, slots=True)
class VaultResult:
    """A single-use frontend token exchanged for a reusable one at a gateway."""

    outcome: Outcome
    token: str | None = None
    card: CardSummary | None = None
    code: str | None = None
    message: str | None = None
    request_refused: bool = False
    """NOT_SENT because the gateway refused the token itself (unknown, used, not its own): as for
    :attr:`GatewayResult.request_refused`, a verdict on the token, not on the gateway's health."""

    @property
    def refused(self) -> bool:
        """The gateway answered and will not vault this token: declined, or refused as invalid."""
        if self.outcome in (Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE):
            return True
        return self.outcome is Outcome.NOT_SENT and self.request_refused


@dataclass(frozen=True, slots=True)
class GatewayNotification:
    """A verified inbound notification from a gateway, reduced to what the state machine needs."""

    event_id: str
    kind: str
    """payment.succeeded, payment.failed, refund.succeeded, dispute.created, ..."""
    attempt_id: str | None = None
    reference: str | None = None
    amount: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a gateway package implements, declared by the package so the core asks, never assumes."""

    authorize: bool = True
    """Charge (authorize and capture at once) or authorize only."""
    partial_capture: bool = False
    """Capture less than the authorized amount."""
    multiple_captures: bool = False
    """Capture one authorization in several parts."""
    void: bool = False
    """Release an authorization that was not captured."""
    refund: bool = False
    """Refund part or all of a captured payment."""
    vault: bool = False
    """Exchange a single-use frontend token for a reusable one."""
    lookup: bool = False
    """Find out what became of an attempt (by replay or by search)."""
    notifications: bool = False
    """Send inbound notifications that :meth:`Gateway.parse_webhook` can verify."""
    customer_authentication: bool = False
    """Carry a charge through a customer authentication (3-D Secure) and back."""
    verify_credentials: bool = False
    """Make one cheap authenticated call that tells whether the credentials are accepted
    (:class:`VerifiesCredentials`)."""


@runtime_checkable
class VerifiesCredentials(Protocol):
    """An adapter that can check its own credentials (``Capabilities.verify_credentials``)."""

    async def verify_credentials(self) -> GatewayResult:
        """One cheap authenticated call that moves no money: APPROVED when the credentials are
        accepted; NOT_SENT with code ``credentials_refused`` when the gateway refused them."""
        ...


class GatewayError(Exception):
    """The one error type an adapter may raise: a request payorch must refuse (e.g. a bad webhook)."""


@runtime_checkable
class Gateway(Protocol):
    """A payment gateway adapter. Every method carries an idempotency key the gateway honours."""

    name: str

    async def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Authorize (``capture=False``) or charge (``capture=True``) ``request.amount``."""
        ...

    async def capture(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Capture ``amount`` of an authorized payment."""
        ...

    async def void(self, reference: str, idempotency_key: str) -> GatewayResult:
        """Release an authorization that was never captured."""
        ...

    async def refund(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Refund ``amount`` of a captured payment; ``reference`` of the result is the refund's id."""
        ...

    async def lookup(self, request: PaymentRequest) -> GatewayResult:
        """Find out what became of ``request``; ``NOT_SENT`` means provably never charged."""
        ...

    async def complete_authentication(
        self, request: PaymentRequest, reference: str, details: Mapping[str, str]
    ) -> GatewayResult:
        """Finish a payment that answered ``ACTION_REQUIRED`` once the customer came back:
        ``details`` are what the gateway sent back with the customer (Adyen's ``redirectResult``),
        empty when the gateway is simply asked where the payment stands. Idempotent: asking twice
        answers the same. ``ACTION_REQUIRED`` again: the customer has not finished yet."""
        ...

    async def vault(self, token: str, idempotency_key: str) -> VaultResult:
        """Exchange a single-use frontend token for a reusable one."""
        ...

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayNotification:
        """Verify and decode an inbound notification; raise :class:`GatewayError` if unverifiable."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
