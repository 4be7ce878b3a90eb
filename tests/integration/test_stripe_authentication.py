"""Customer authentication at Stripe (the fake, through the real SDK): a PaymentIntent that
``requires_action`` becomes a ``requires_action`` charge with Stripe's own ``next_action``, finished
by confirm or by Stripe's notification (whichever comes second is a no-op), and expired by the
reconciler unless the customer completed, even while the expiry is under way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from tests.factories import create_merchant, post_charge
from tests.fakes.stripe_server import StripeFake
from tests.integration.stripe_authentication_support import (
    RETURN_URL,
    body,
    expire_now,
    stripe_app,
    succeeded_event,
    waiting_charge,
)

from payorch.runtime import Runtime


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


@pytest.fixture(scope="module")
async def app(database_url: str, fake: StripeFake) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with stripe_app(database_url, fake) as built:
        yield built


async def test_a_challenge_redirects_to_stripes_page_and_confirm_reads_the_intent(
    app: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    charge = await waiting_charge(client, merchant)
    intent_id = charge["gateway_reference"]
    redirect = charge["next_action"]["redirect_to_url"]

    assert redirect == {"url": f"{fake.url}/3ds/{intent_id}/page", "return_url": RETURN_URL}
    assert fake.authenticate(intent_id, succeed=True)
    confirmed = await client.post(f"/v1/charges/{charge['id']}/confirm", headers=merchant.headers)

    assert confirmed.status_code == 200, confirmed.text
    done = confirmed.json()
    assert (done["status"], done["amount_captured"]) == ("succeeded", 2000)
    assert done["authentication"] == {"status": "succeeded", "version": "2.2.0", "liability_shifted": True}
    [payment] = [p for p in fake.ledger if p.reference == intent_id]
    assert (payment.status, payment.amount_captured) == ("succeeded", 2000)


async def test_without_a_return_url_stripe_js_gets_the_client_secret(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)

    response = await post_charge(client, merchant, body())

    assert response.status_code == 202
    action = response.json()["next_action"]
    assert action["type"] == "gateway_sdk"
    sdk = action["gateway_sdk"]
    assert (sdk["gateway"], sdk["account"]) == ("stripe", "stripe")
    assert sdk["client_secret"].startswith(response.json()["gateway_reference"] + "_secret_")


async def test_confirm_racing_the_notification_settles_once(
    app: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    charge = await waiting_charge(client, merchant)
    intent_id = charge["gateway_reference"]
    assert fake.authenticate(intent_id, succeed=True)
    headers, payload = succeeded_event(fake, intent_id)

    confirmed, notified = await asyncio.gather(
        client.post(f"/v1/charges/{charge['id']}/confirm", headers=merchant.headers),
        client.post("/v1/gateway_webhooks/stripe", content=payload, headers=headers),
    )

    assert confirmed.status_code == 200, confirmed.text
    assert notified.status_code == 200, notified.text
    assert confirmed.json()["status"] == "succeeded"
    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert got["status"] == "succeeded"
    [payment] = [p for p in fake.ledger if p.reference == intent_id]
    assert (payment.status, payment.amount_captured) == ("succeeded", 2000)
    # The notification's second delivery, and a confirm after both, change nothing.
    again = await client.post("/v1/gateway_webhooks/stripe", content=payload, headers=headers)
    late_confirm = await client.post(f"/v1/charges/{charge['id']}/confirm", headers=merchant.headers)
    assert again.status_code == 200
    assert late_confirm.json() == confirmed.json() | {"updated": late_confirm.json()["updated"]}


async def test_an_abandoned_challenge_is_canceled_at_stripe_at_its_expiry(
    app: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    charge = await waiting_charge(client, merchant)

    await expire_now(runtime, [charge["id"]])
    await runtime.reconciler.run_once()

    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert (got["status"], got["failure_code"]) == ("canceled", "authentication_expired")
    [payment] = [p for p in fake.ledger if p.reference == charge["gateway_reference"]]
    assert (payment.status, payment.amount_captured) == ("canceled", 0)


async def test_a_completion_after_the_expiry_check_started_still_wins(
    app: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    """The reconciler asked (still waiting) and decided to cancel; the customer completed before the
    cancel reached Stripe. Stripe refuses to cancel a succeeded intent, and the charge succeeds."""
    runtime, client = app
    merchant = await create_merchant(runtime)
    charge = await waiting_charge(client, merchant)
    intent_id = charge["gateway_reference"]
    fake.before_cancel = lambda canceled: fake.authenticate(canceled, succeed=True) and None
    try:
        await expire_now(runtime, [charge["id"]])
        await runtime.reconciler.run_once()
    finally:
        fake.before_cancel = None

    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert got["status"] == "succeeded"
    assert got["authentication"]["status"] == "succeeded"
    [payment] = [p for p in fake.ledger if p.reference == intent_id]
    assert (payment.status, payment.amount_captured) == ("succeeded", 2000)


async def test_an_off_session_charge_needing_the_customer_is_402_then_finished_on_session(
    app: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)

    declined = await post_charge(client, merchant, body("pm_card_authenticationRequiredOnSetup", off_session=True))

    assert declined.status_code == 402, declined.text
    error = declined.json()["error"]
    assert (error["code"], error["decline_code"]) == ("authentication_required", "authentication_required")
    assert error["next_action"]["gateway_sdk"]["client_secret"]
    charge = (await client.get(f"/v1/charges/{error['charge']}", headers=merchant.headers)).json()
    assert charge["status"] == "requires_action"
    # The customer is brought back and confirms the PaymentIntent with Stripe.js.
    assert fake.authenticate(charge["gateway_reference"], succeed=True)
    confirmed = await client.post(f"/v1/charges/{charge['id']}/confirm", headers=merchant.headers)
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "succeeded"
