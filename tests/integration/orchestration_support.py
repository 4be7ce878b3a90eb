"""Shared by the routing, breaker and chaos tests: the three gateway fakes, a Runtime configured to
them (stripe, then braintree, then adyen), and what the fakes' ledgers say a charge cost the customer."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from tests.conftest import make_settings
from tests.factories import query
from tests.fakes.adyen_server import AdyenFake, encrypted_card
from tests.fakes.braintree_server import BraintreeFake
from tests.fakes.stripe_server import StripeFake

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.storage import charges as repo


@dataclass(frozen=True)
class Fakes:
    stripe: StripeFake
    braintree: BraintreeFake
    adyen: AdyenFake


@contextmanager
def running_fakes() -> Iterator[Fakes]:
    with StripeFake() as stripe, BraintreeFake() as braintree, AdyenFake() as adyen:
        yield Fakes(stripe, braintree, adyen)


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused (a not-sent failure)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_configs(fakes: Fakes, *, stripe_ms: int = 500, others_ms: int = 3000) -> list[dict[str, Any]]:
    return [
        {
            "name": "stripe",
            "kind": "stripe",
            "base_url": fakes.stripe.url,
            "api_key": fakes.stripe.api_key,
            "timeout_ms": stripe_ms,
        },
        {
            "name": "braintree",
            "kind": "braintree",
            "base_url": fakes.braintree.url,
            "merchant_account": fakes.braintree.merchant_id,
            "public_key": fakes.braintree.public_key,
            "private_key": fakes.braintree.private_key,
            "timeout_ms": others_ms,
        },
        {
            "name": "adyen",
            "kind": "adyen",
            "base_url": fakes.adyen.base_url,
            "api_key": fakes.adyen.api_key,
            "merchant_account": fakes.adyen.merchant_account,
            "timeout_ms": others_ms,
        },
    ]


@asynccontextmanager
async def runtime_for(database_url: str, gateways: list[dict[str, Any]], **overrides: Any) -> AsyncIterator[Runtime]:
    runtime = await Runtime.build(make_settings(database_url, gateways=gateways, **overrides), database_url)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@asynccontextmanager
async def app_client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the app built on ``runtime``, called in process."""
    app = create_app(runtime.settings, runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http


def clear_faults(fakes: Fakes) -> None:
    fakes.stripe.clear_faults()
    fakes.braintree.clear_faults()
    fakes.adyen.clear_faults()


def adyen_token(holder: str = "J.Smith") -> str:
    """A Drop-in card token as a merchant's frontend sends it: compact JSON (tokens have no spaces)."""
    return json.dumps(json.loads(encrypted_card(holder)), separators=(",", ":"))


def charge_body(
    stripe: str | None = "tok_visa",
    braintree: str | None = "fake-valid-nonce",
    adyen: str | None = "",
    *,
    amount: int = 1500,
    currency: str = "usd",
    **extra: Any,
) -> dict[str, Any]:
    """A charge with a token for each named gateway (``adyen=""`` means a default test card)."""
    tokens = {"stripe": stripe, "braintree": braintree, "adyen": adyen_token() if adyen == "" else adyen}
    return {
        "amount": amount,
        "currency": currency,
        "payment_method": {"tokens": {k: v for k, v in tokens.items() if v}},
        **extra,
    }


async def attempt_rows(runtime: Runtime, merchant_id: str, charge_id: str) -> list[tuple[str, str, str | None]]:
    """(gateway, status, raw code) of each attempt, in order."""
    async with runtime.db.connection() as connection:
        found = await repo.list_attempts(connection, merchant_id, charge_id)
    return [(a.gateway, a.status, a.raw_code) for a in sorted(found, key=lambda a: a.seq)]


async def attempt_ids(runtime: Runtime, merchant_id: str, charge_id: str) -> list[str]:
    async with runtime.db.connection() as connection:
        found = await repo.list_attempts(connection, merchant_id, charge_id)
    return [a.id for a in sorted(found, key=lambda a: a.seq)]


@dataclass(frozen=True)
class Holding:
    """Money one gateway holds from the customer for one attempt (authorized or captured, net of refunds)."""

    gateway: str
    reference: str
    amount: int
    captured: bool


@dataclass(frozen=True)
class Ledgers:
    """One snapshot of the three fakes' books, indexed by attempt id (each payment carries it)."""

    by_attempt: dict[str, list[Holding]]
    payments: dict[str, int]
    """How many payments each gateway made under each attempt id (more than 1 is a double charge)."""

    @classmethod
    def take(cls, fakes: Fakes) -> Ledgers:
        by_attempt: dict[str, list[Holding]] = {}
        payments: dict[str, int] = {}

        def add(attempt: str | None, holding: Holding | None) -> None:
            if attempt is None:
                return
            payments[attempt] = payments.get(attempt, 0) + 1
            if holding is not None and holding.amount > 0:
                by_attempt.setdefault(attempt, []).append(holding)

        for payment in fakes.stripe.ledger:
            net = payment.amount_captured - payment.amount_refunded
            held = {"succeeded": net, "requires_capture": payment.amount}.get(payment.status, 0)
            captured = payment.status == "succeeded"
            add(payment.metadata.get("attempt_id"), Holding("stripe", payment.reference, held, captured))
        braintree = fakes.braintree.ledger
        refunded: dict[str, Decimal] = {}
        for credit in braintree:
            if credit.type == "credit" and credit.refunded_transaction_id is not None:
                key = credit.refunded_transaction_id
                refunded[key] = refunded.get(key, Decimal(0)) + credit.amount
        for sale in braintree:
            if sale.type != "sale":
                continue
            net = int((sale.amount - refunded.get(sale.id, Decimal(0))) * 100) if sale.holds_money else 0
            add(sale.order_id, Holding("braintree", sale.id, net, sale.status != "authorized"))
        for payment in fakes.adyen.ledger:
            net = payment.amount_captured - payment.amount_refunded
            held = {"captured": net, "authorised": payment.amount}.get(payment.status, 0)
            captured = payment.status == "captured"
            add(payment.metadata.get("attempt_id"), Holding("adyen", payment.reference, held, captured))
        return cls(by_attempt, payments)

    def holdings(self, attempts: list[str]) -> list[Holding]:
        return [h for a in attempts for h in self.by_attempt.get(a, [])]


def holdings(fakes: Fakes, attempts: list[str]) -> list[Holding]:
    """Every payment made under any of ``attempts`` that still holds the customer's money."""
    ledgers = Ledgers.take(fakes)
    for attempt in attempts:
        assert ledgers.payments.get(attempt, 0) <= 1, f"attempt {attempt} was charged more than once"
    return ledgers.holdings(attempts)


async def wait_for(condition: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


async def unresolved_attempts(runtime: Runtime, merchant_ids: list[str]) -> int:
    count = await query(
        runtime.db,
        "SELECT count(*) FROM charge_attempts WHERE merchant_id = ANY(:merchants) AND status IN ('pending', 'unknown')",
        merchants=merchant_ids,
    )
    return int(count[0][0])


async def reconcile_until_settled(runtime: Runtime, merchant_ids: list[str], timeout: float = 30.0) -> None:
    """Run the reconciler until none of these merchants' attempts is pending or unknown.

    (It reschedules an inconclusive lookup at least 1 s out, so this takes a few rounds.)
    """

    async def settled() -> bool:
        await runtime.reconciler.run_once()
        return await unresolved_attempts(runtime, merchant_ids) == 0

    await wait_for(settled, timeout)
