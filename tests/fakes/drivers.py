"""How the adapter contract suite drives each gateway fake: what a payment looks like in its ledger,
how a fault is injected, which test tokens do what, and what each gateway answers where the
gateways legitimately differ (a refusal's code, a 503 that does or does not state that nothing ran).

The suite (tests/integration/test_gateway_contract.py) is written once against :class:`GatewayDriver`;
each subclass (tests/fakes/ledger_drivers.py, tests/fakes/braintree_driver.py) speaks to one fake
through the real SDK or client, built by the gateway's plugin. tests/fakes/fixtures.py lists them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from payorch.gateways.base import CustomerPresence, Gateway, Outcome, PaymentRequest
from payorch.gateways.config import GatewayConfig
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import plugin_for
from payorch.ids import new_id

TIMEOUT_MS = 500
"""Faults that hold a request last one client timeout: keep it short."""


@dataclass(frozen=True)
class Booked:
    """A payment as the fake's ledger holds it, in minor units: the truth outcomes are checked against."""

    reference: str
    key: str | None
    """What the payment was sent under: its idempotency key or order id (the attempt id)."""
    amount_captured: int
    refunds: list[int]
    holds_money: bool
    """Authorized or captured, not declined, voided or released."""
    voided: bool

    @property
    def amount_refunded(self) -> int:
        return sum(self.refunds)


@dataclass(frozen=True)
class Expect:
    outcome: Outcome
    code: str | None = None
    """Checked when given."""


@dataclass(frozen=True)
class Decline:
    token: str
    amount: int
    outcome: Outcome
    decline_code: str
    code: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A token the gateway refuses as an invalid request before anything runs."""

    token: str
    code: str
    param: str | None
    """The payorch field the refusal is about."""


@dataclass(frozen=True)
class Notified:
    """What a verified notification must decode to."""

    kind: str
    attempt_id: str | None
    reference: str | None
    amount: int | None
    event_id: str | None = None


@dataclass(frozen=True)
class SignedNotification:
    headers: dict[str, str]
    body: bytes
    expected: Notified


@dataclass(frozen=True)
class FaultCase:
    """What an adapter answers when the fake shows a fault on an authorization."""

    outcome: Outcome
    charged: bool
    """Whether the fake's ledger holds the payment once the fault has played out (before any lookup)."""
    code: str | None = None


@dataclass
class GatewayDriver:
    """One gateway fake, for the contract suite. Class attributes are what this gateway answers."""

    fake: Any

    kind: ClassVar[str]
    amount: ClassVar[int]
    currency: ClassVar[str]
    approve_token: ClassVar[str]
    other_approve_token: ClassVar[str]
    approved_card: ClassVar[tuple[str, str]]
    """(brand, last4) of ``approve_token``."""
    declines: ClassVar[tuple[Decline, ...]]
    insufficient_funds: ClassVar[tuple[str, int]]
    """(token, amount) the gateway declines for insufficient funds."""
    faults: ClassVar[dict[str, FaultCase]]
    unusable_token: ClassVar[str]
    unusable_token_result: ClassVar[Expect]
    refusals: ClassVar[tuple[Refusal, ...]]
    capture_above_authorized: ClassVar[Expect]
    capture_unknown_payment: ClassVar[Expect]
    refund_too_large: ClassVar[Expect]
    void_captured: ClassVar[Expect]
    wrong_credentials: ClassVar[tuple[dict[str, str], Expect]]
    connect_refused_code: ClassVar[str]
    vault_source: ClassVar[str]
    vault_card: ClassVar[tuple[str, str]]
    vault_refusals: ClassVar[tuple[tuple[str, Expect], ...]]
    capture_confirms: ClassVar[bool]
    """A capture's answer says the money was captured (else it is only acknowledged, and confirmed
    by a notification later)."""
    replays_by_key: ClassVar[bool]
    """The same idempotency key answers with the first answer (authorizations and refunds)."""
    lookup_replays: ClassVar[bool]
    """A lookup runs an attempt that never ran (a replay) rather than searching for it."""
    in_flight_code: ClassVar[str | None]
    """The code of a lookup while a late success still holds its key; None if never observable."""
    notification_secret: ClassVar[str | None]
    """The config field without which notifications are refused; None if the gateway always has one."""
    unverified: ClassVar[str]
    """What the refusal of a notification whose signature does not match says (a regex)."""
    challenge_token: ClassVar[str | None] = None
    """A card whose issuer asks the customer to authenticate (3-D Secure challenge); None where the
    gateway never sends a customer anywhere."""
    frictionless_token: ClassVar[str | None] = None
    """A card that authenticates without a challenge."""

    # -- the adapter ------------------------------------------------------------------------------

    def config_fields(self) -> dict[str, object]:
        raise NotImplementedError

    def config(self, **overrides: object) -> GatewayConfig:
        fields = {"name": self.kind, "kind": self.kind, "timeout_ms": TIMEOUT_MS, **self.config_fields()}
        return plugin_for(self.kind).config.model_validate({**fields, **overrides})

    def build(self, **overrides: object) -> Gateway:
        """The adapter as the runtime builds it: by the plugin of the config's kind."""
        config = self.config(**overrides)
        return plugin_for(config.kind).build(config, GatewayServices())

    def closed_base_url(self) -> str:
        """A local address nothing listens on: connecting is refused."""
        return f"http://127.0.0.1:{closed_port()}"

    def request(
        self,
        token: str | None = None,
        *,
        amount: int | None = None,
        capture: bool = True,
        currency: str | None = None,
        presence: CustomerPresence | None = None,
    ) -> PaymentRequest:
        return PaymentRequest(
            attempt_id=new_id("att"),
            merchant_id="mer_1",
            charge_id=new_id("ch"),
            amount=self.amount if amount is None else amount,
            currency=currency or self.currency,
            token=token or self.approve_token,
            capture=capture,
            presence=presence or CustomerPresence(),
        )

    # -- the fake's side --------------------------------------------------------------------------

    def booked(self, attempt_id: str) -> list[Booked]:
        raise NotImplementedError

    def booked_payment(self, reference: str) -> Booked:
        raise NotImplementedError

    def inject(self, fault: str, *, on: str = "authorize", token: str | None = None) -> None:
        """Show ``fault`` on the next ``on`` call (authorize, lookup or vault), or on ``token``'s."""
        raise NotImplementedError

    def request_count(self) -> int:
        return int(self.fake.request_count)

    async def until(self, predicate: Callable[[], bool]) -> None:
        await self.fake.until(predicate)

    async def until_idle(self) -> None:
        await self.fake.until_idle()

    def release(self) -> None:
        """Let a held late success go on."""

    def settle(self, reference: str) -> None:
        """Make a captured payment refundable (and no longer voidable), where the gateway settles later."""

    def authenticate(self, reference: str, *, succeed: bool) -> dict[str, str]:
        """The customer finishes (or fails) the challenge of payment ``reference`` at the fake; what
        comes back with them, to confirm with."""
        raise NotImplementedError

    async def signed_notification(self, adapter: Gateway, *, by_us: bool = True) -> SignedNotification:
        raise NotImplementedError

    def tamper(self, body: bytes) -> bytes:
        raise NotImplementedError


UNKNOWN, NOT_SENT = Outcome.UNKNOWN, Outcome.NOT_SENT


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
