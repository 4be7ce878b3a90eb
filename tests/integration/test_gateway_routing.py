"""Routing through the real app and the real Stripe, Braintree and Adyen adapters, against their fakes:
fail over only where no customer can be charged twice (DESIGN.md section 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from orchestration_support import (
    Fakes,
    attempt_ids,
    attempt_rows,
    charge_body,
    closed_port,
    gateway_configs,
    holdings,
    reconcile_until_settled,
    running_fakes,
    runtime_for,
)
from tests.factories import MerchantFixture, create_merchant
from tests.fakes.braintree_server import Fault as BraintreeFault
from tests.fakes.stripe_server import Fault

from payorch.app import create_app
from payorch.runtime import Runtime

NO_BREAKER = {"enabled": False}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_faults(fakes: Fakes) -> Iterator[None]:
    yield
    fakes.stripe.clear_faults()
    fakes.braintree.clear_faults()
    fakes.adyen.clear_faults()
    fakes.stripe.release()


@pytest.fixture(scope="module")
async def runtime(database_url: str, fakes: Fakes) -> AsyncIterator[Runtime]:
    routing = {"order_by_currency": {"EUR": ["adyen", "stripe"]}}
    async with runtime_for(database_url, gateway_configs(fakes), breaker=NO_BREAKER, routing=routing) as built:
        yield built


@pytest.fixture(scope="module")
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(runtime.settings, runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http


async def charge(client: httpx.AsyncClient, merchant: MerchantFixture, body: dict[str, object]) -> httpx.Response:
    return await client.post("/v1/charges", json=body, headers=merchant.headers)


def charge_id_of(response: httpx.Response) -> str:
    payload = response.json()
    return str(payload["error"]["charge"] if "error" in payload else payload["id"])


async def test_an_approval_on_the_primary_goes_no_further(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes
) -> None:
    merchant = await create_merchant(runtime)
    before = (len(fakes.braintree.requests), fakes.adyen.request_count)
    response = await charge(client, merchant, charge_body())
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["gateway"], body["amount_captured"]) == ("succeeded", "stripe", 1500)
    assert await attempt_rows(runtime, merchant.id, body["id"]) == [("stripe", "approved", "succeeded")]
    ids = await attempt_ids(runtime, merchant.id, body["id"])
    [held] = holdings(fakes, ids)
    assert (held.gateway, held.amount, held.captured, held.reference) == (
        "stripe",
        1500,
        True,
        body["gateway_reference"],
    )
    assert (len(fakes.braintree.requests), fakes.adyen.request_count) == before


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"), ("tok_chargeDeclinedStolenCard", "stolen_card")],
)
async def test_a_hard_decline_never_reaches_the_second_gateway(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes, token: str, decline_code: str
) -> None:
    merchant = await create_merchant(runtime)
    before = (len(fakes.braintree.requests), fakes.adyen.request_count)
    response = await charge(client, merchant, charge_body(stripe=token))
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert (error["type"], error["decline_code"]) == ("card_error", decline_code)
    assert await attempt_rows(runtime, merchant.id, error["charge"]) == [("stripe", "declined", "card_declined")]
    assert (len(fakes.braintree.requests), fakes.adyen.request_count) == before
    assert holdings(fakes, await attempt_ids(runtime, merchant.id, error["charge"])) == []


@pytest.mark.parametrize("fault", [Fault.ERROR_503_BEFORE_CHARGE, Fault.RATE_LIMITED])
async def test_a_not_sent_error_fails_over_to_the_second_gateway(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes, fault: Fault
) -> None:
    merchant = await create_merchant(runtime)
    fakes.stripe.inject(fault)
    response = await charge(client, merchant, charge_body())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["gateway"] == "braintree"
    rows = await attempt_rows(runtime, merchant.id, body["id"])
    assert [(g, s) for g, s, _ in rows] == [("stripe", "not_sent"), ("braintree", "approved")]
    ids = await attempt_ids(runtime, merchant.id, body["id"])
    assert fakes.stripe.charges_for(ids[0]) == []  # nothing ran at the first gateway
    [held] = holdings(fakes, ids)
    assert (held.gateway, held.amount, held.reference) == ("braintree", 1500, body["gateway_reference"])


async def test_a_refused_connection_on_the_first_gateway_reaches_the_next(database_url: str, fakes: Fakes) -> None:
    down = {"name": "stripe", "kind": "stripe", "base_url": f"http://127.0.0.1:{closed_port()}"}
    gateways = [{**down, "api_key": "sk_test_fake", "timeout_ms": 500}, *gateway_configs(fakes)[1:]]
    async with runtime_for(database_url, gateways, breaker=NO_BREAKER) as runtime:
        app = create_app(runtime.settings, runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            merchant = await create_merchant(runtime)
            response = await charge(client, merchant, charge_body())
            assert response.status_code == 201, response.text
            rows = await attempt_rows(runtime, merchant.id, response.json()["id"])
    assert [(g, s) for g, s, _ in rows] == [("stripe", "not_sent"), ("braintree", "approved")]
    assert rows[0][2] == "ConnectError"


async def test_the_per_currency_order_is_followed(runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes) -> None:
    merchant = await create_merchant(runtime)
    stripe_before = fakes.stripe.request_count
    response = await charge(client, merchant, charge_body(currency="eur"))
    assert response.status_code == 201, response.text
    assert response.json()["gateway"] == "adyen"
    assert fakes.stripe.request_count == stripe_before


async def test_every_gateway_not_sent_answers_503(runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes) -> None:
    merchant = await create_merchant(runtime)
    fakes.stripe.inject(Fault.ERROR_503_BEFORE_CHARGE)
    fakes.braintree.inject(BraintreeFault.ERROR_503_BEFORE_CHARGE)
    fakes.adyen.inject(Fault.RATE_LIMITED)
    response = await charge(client, merchant, charge_body())
    assert response.status_code == 503, response.text
    charge_id = charge_id_of(response)
    rows = await attempt_rows(runtime, merchant.id, charge_id)
    assert [(g, s) for g, s, _ in rows] == [("stripe", "not_sent"), ("braintree", "not_sent"), ("adyen", "not_sent")]
    assert holdings(fakes, await attempt_ids(runtime, merchant.id, charge_id)) == []


@pytest.mark.parametrize("fault", [Fault.RESET_AFTER_CHARGE, Fault.ERROR_500_AFTER_CHARGE, Fault.HANG])
async def test_an_unknown_outcome_is_resolved_on_the_same_gateway(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes, fault: Fault
) -> None:
    merchant = await create_merchant(runtime)
    before = (len(fakes.braintree.requests), fakes.adyen.request_count)
    fakes.stripe.inject(fault)
    response = await charge(client, merchant, charge_body())
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["status"], body["gateway"]) == ("succeeded", "stripe")
    rows = await attempt_rows(runtime, merchant.id, body["id"])
    assert [(g, s) for g, s, _ in rows] == [("stripe", "approved")]
    [held] = holdings(fakes, await attempt_ids(runtime, merchant.id, body["id"]))
    assert (held.gateway, held.reference) == ("stripe", body["gateway_reference"])
    assert (len(fakes.braintree.requests), fakes.adyen.request_count) == before


async def test_still_unknown_answers_202_and_the_reconciler_takes_the_gateways_truth(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes
) -> None:
    merchant = await create_merchant(runtime)
    before = (len(fakes.braintree.requests), fakes.adyen.request_count)
    fakes.stripe.inject(Fault.LATE_SUCCESS)  # held in flight: lookups hear "key in use"
    response = await charge(client, merchant, charge_body())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "processing"
    rows = await attempt_rows(runtime, merchant.id, body["id"])
    assert [(g, s) for g, s, _ in rows] == [("stripe", "unknown")]
    assert (len(fakes.braintree.requests), fakes.adyen.request_count) == before
    [attempt] = await attempt_ids(runtime, merchant.id, body["id"])

    fakes.stripe.release()  # the gateway finishes the charge after payorch stopped waiting
    await fakes.stripe.until(lambda: bool(fakes.stripe.charges_for(attempt)))
    await reconcile_until_settled(runtime, [merchant.id])
    fetched = (await client.get(f"/v1/charges/{body['id']}", headers=merchant.headers)).json()
    [held] = holdings(fakes, [attempt])
    assert (fetched["status"], fetched["gateway"], fetched["gateway_reference"]) == (
        "succeeded",
        "stripe",
        held.reference,
    )
    assert held.amount == 1500
    assert (len(fakes.braintree.requests), fakes.adyen.request_count) == before


async def test_a_canceled_intent_found_by_lookup_is_not_an_authorization(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes
) -> None:
    """Stripe maps a canceled PaymentIntent to APPROVED/"canceled" (right for a void). Found by a
    lookup, it is an authorization released at the gateway: the charge must not become authorized."""
    merchant = await create_merchant(runtime)
    fakes.stripe.inject(Fault.ERROR_500_AFTER_CHARGE)
    fakes.stripe.inject(Fault.HANG, times=4)  # both lookups' replay and search go unanswered
    response = await charge(client, merchant, charge_body(capture=False))
    assert response.status_code == 202, response.text
    charge_id = response.json()["id"]
    fakes.stripe.clear_faults()
    [attempt] = await attempt_ids(runtime, merchant.id, charge_id)
    [intent] = fakes.stripe.charges_for(attempt)
    assert intent.status == "requires_capture"
    # Someone releases the authorization at Stripe (an operator in the dashboard).
    canceled = httpx.post(
        f"{fakes.stripe.url}/v1/payment_intents/{intent.reference}/cancel",
        headers={"Authorization": f"Bearer {fakes.stripe.api_key}"},
        timeout=5,
    )
    assert canceled.status_code == 200
    await reconcile_until_settled(runtime, [merchant.id])
    fetched = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert fetched["status"] == "failed"
    assert fetched["decline_code"] == "canceled"
    assert await attempt_rows(runtime, merchant.id, charge_id) == [("stripe", "declined", "canceled")]
    assert holdings(fakes, [attempt]) == []


@pytest.mark.parametrize("capture", [True, False])
async def test_failover_on_unknown_reverses_the_late_success(database_url: str, fakes: Fakes, capture: bool) -> None:
    routing = {"failover_on_unknown": True}
    async with runtime_for(database_url, gateway_configs(fakes), breaker=NO_BREAKER, routing=routing) as runtime:
        app = create_app(runtime.settings, runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            merchant = await create_merchant(runtime)
            fakes.stripe.inject(Fault.LATE_SUCCESS)
            response = await charge(client, merchant, charge_body(capture=capture))
            assert response.status_code == 201, response.text
            body = response.json()
            assert (body["status"], body["gateway"]) == ("succeeded" if capture else "authorized", "braintree")
            first, second = await attempt_ids(runtime, merchant.id, body["id"])
            assert [s for _, s, _ in await attempt_rows(runtime, merchant.id, body["id"])] == ["unknown", "approved"]

            fakes.stripe.release()  # the first gateway's late success lands
            await fakes.stripe.until(lambda: bool(fakes.stripe.charges_for(first)))
            [late] = fakes.stripe.charges_for(first)
            assert late.amount_captured == (1500 if capture else 0)
            await reconcile_until_settled(runtime, [merchant.id])
            rows = await attempt_rows(runtime, merchant.id, body["id"])
            fetched = (await client.get(f"/v1/charges/{body['id']}", headers=merchant.headers)).json()

    assert [(g, s) for g, s, _ in rows] == [("stripe", "reversed"), ("braintree", "approved")]
    [reversed_late] = fakes.stripe.charges_for(first)
    if capture:
        assert (reversed_late.status, reversed_late.refunds) == ("succeeded", [1500])
    else:
        assert reversed_late.status == "canceled"
    # Charged at most once across every ledger: only the winner holds money.
    [held] = holdings(fakes, [first, second])
    assert (held.gateway, held.amount, held.reference) == ("braintree", 1500, fetched["gateway_reference"])
    assert fetched["status"] == ("succeeded" if capture else "authorized")
