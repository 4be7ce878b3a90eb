"""Answers that tell the merchant the truth (issue 18): a request every gateway refused as invalid is
a 4xx naming each gateway's code and message, through the real app and the real Stripe, Braintree
and Adyen adapters against their fakes; a gateway that was down is still a 503.

- the adapters' side (each driver's ``refusals``): NOT_SENT, the request's fault, the field named;
- charges: 400 ``token_rejected`` / ``parameter_invalid``, and the stored charge, its attempts, its
  event, its audit events and the idempotent replay all say the same;
- vaulting: 400 ``token_rejected`` when every gateway refused its token, 503 when one was down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from orchestration_support import (
    Fakes,
    app_client,
    attempt_rows,
    charge_body,
    clear_faults,
    gateway_configs,
    running_fakes,
    runtime_for,
)
from tests.factories import MerchantFixture, create_merchant, query
from tests.fakes.braintree_server import Fault as BraintreeFault
from tests.fakes.drivers import GatewayDriver, Refusal
from tests.fakes.fixtures import DRIVERS
from tests.fakes.stripe_server import Fault

from payorch.gateways.base import Gateway, Outcome
from payorch.ids import new_id
from payorch.runtime import Runtime

BAD_ADYEN = '{"type":"scheme","encryptedCardNumber":"not-encrypted"}'

# -- the adapters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gateway_kind", "refusal"),
    [pytest.param(kind, r, id=f"{kind}-{r.code}") for kind, d in DRIVERS.items() for r in d.refusals],
)
async def test_a_refused_token_is_the_requests_fault(adapter: Gateway, driver: GatewayDriver, refusal: Refusal) -> None:
    request = driver.request(refusal.token)

    result = await adapter.authorize(request)

    assert (result.outcome, result.request_refused) == (Outcome.NOT_SENT, True), result
    assert (result.code, result.param) == (refusal.code, refusal.param)
    assert result.message
    assert driver.booked(request.attempt_id) == []


@pytest.mark.parametrize(
    ("gateway_kind", "token"),
    [
        pytest.param(kind, token, id=f"{kind}-{token[:30]}")
        for kind, d in DRIVERS.items()
        for token, _ in d.vault_refusals
    ],
)
async def test_a_vault_refusal_is_a_refusal_not_an_outage(adapter: Gateway, token: str) -> None:
    result = await adapter.vault(token, new_id("pm"))

    assert result.refused, result
    assert result.token is None


@pytest.mark.parametrize("gateway_kind", ["stripe"])
async def test_a_used_stripe_token_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    token = f"tok_{new_id('used')}"
    driver.fake.spend(token)

    charged = await adapter.authorize(driver.request(token))
    vaulted = await adapter.vault(token, new_id("pm"))

    assert (charged.outcome, charged.request_refused, charged.code) == (Outcome.NOT_SENT, True, "token_already_used")
    assert charged.param == "payment_method"
    assert (vaulted.refused, vaulted.code) == (True, "token_already_used")


# -- through the app --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_faults(fakes: Fakes) -> Iterator[None]:
    yield
    clear_faults(fakes)


@pytest.fixture(scope="module")
async def runtime(database_url: str, fakes: Fakes) -> AsyncIterator[Runtime]:
    gateways = [*gateway_configs(fakes), {"name": "sandbox", "kind": "sandbox"}]
    async with runtime_for(database_url, gateways, breaker={"enabled": False}) as built:
        yield built


@pytest.fixture(scope="module")
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as http:
        yield http


@pytest.fixture
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


async def post(
    client: httpx.AsyncClient, merchant: MerchantFixture, path: str, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = {**merchant.headers, **({"Idempotency-Key": key} if key else {})}
    return await client.post(path, json=body, headers=headers)


def error_of(response: httpx.Response, status: int, error_type: str, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code), error
    assert error["request_id"] == response.headers["request-id"]
    return error


async def test_a_charge_every_gateway_refused_is_a_400_the_charge_agrees_with(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    body = charge_body(stripe="tok_nonexistent", braintree="fake-consumed-nonce", adyen=BAD_ADYEN)

    response = await post(client, merchant, "/v1/charges", body, key="refused-1")

    error = error_of(response, 400, "invalid_request_error", "token_rejected")
    assert error["param"] == "payment_method"
    message = error["message"]
    for expected in ("stripe refused", "resource_missing", "No such token", "braintree refused", "91564", "174"):
        assert expected in message, message
    charge_id = error["charge"]
    # The stored charge, its attempts, its event, its audit events and the replay say the same.
    charge = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert (charge["status"], charge["failure_code"], charge["failure_message"]) == (
        "failed",
        "token_rejected",
        message,
    )
    assert charge["decline_code"] is None
    assert await attempt_rows(runtime, merchant.id, charge_id) == [
        ("stripe", "not_sent", "resource_missing"),
        ("braintree", "not_sent", "91564"),
        ("adyen", "not_sent", "174"),
    ]
    [event] = await query(
        runtime.db,
        "SELECT type, payload FROM events WHERE merchant_id = :m AND resource_id = :c",
        m=merchant.id,
        c=charge_id,
    )
    assert (event["type"], event["payload"]["failure_code"]) == ("charge.failed", "token_rejected")
    assert event["payload"]["failure_message"] == message
    [audit] = await query(
        runtime.db,
        "SELECT payload->'details' AS d FROM audit_outbox WHERE payload->'resource'->>'id' = :c "
        "AND payload->>'action' = 'charge.failed'",
        c=charge_id,
    )
    assert (audit["d"]["code"], audit["d"]["message"]) == ("token_rejected", message)
    replay = await post(client, merchant, "/v1/charges", body, key="refused-1")
    assert (replay.status_code, replay.content) == (400, response.content)
    assert replay.headers["idempotent-replayed"] == "true"


async def test_a_used_token_on_the_only_gateway_is_a_400(
    client: httpx.AsyncClient, fakes: Fakes, merchant: MerchantFixture
) -> None:
    token = f"tok_{new_id('used')}"
    fakes.stripe.spend(token)

    response = await post(client, merchant, "/v1/charges", charge_body(stripe=token, braintree=None, adyen=None))

    error = error_of(response, 400, "invalid_request_error", "token_rejected")
    assert "token_already_used" in error["message"]
    assert "You cannot use a Stripe token more than once" in error["message"]


async def test_a_parameter_the_gateway_refused_is_a_400_naming_it(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    body = charge_body(stripe="tok_visa", braintree=None, adyen=None, amount=30)

    response = await post(client, merchant, "/v1/charges", body)

    error = error_of(response, 400, "invalid_request_error", "parameter_invalid")
    assert "amount_too_small" in error["message"]
    assert "Amount must be at least $0.50 usd" in error["message"]
    charge = (await client.get(f"/v1/charges/{error['charge']}", headers=merchant.headers)).json()
    assert (charge["status"], charge["failure_code"]) == ("failed", "parameter_invalid")
    assert await attempt_rows(runtime, merchant.id, error["charge"]) == [("stripe", "not_sent", "amount_too_small")]


async def test_a_refusal_then_a_gateway_that_was_down_is_still_a_503(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes, merchant: MerchantFixture
) -> None:
    fakes.braintree.inject(BraintreeFault.ERROR_503_BEFORE_CHARGE)

    response = await post(client, merchant, "/v1/charges", charge_body(stripe="tok_nonexistent", adyen=None))

    error = error_of(response, 503, "gateway_error", "gateway_unavailable")
    assert "stripe refused: No such token" in error["message"]
    assert "braintree could not be reached" in error["message"]
    charge = (await client.get(f"/v1/charges/{error['charge']}", headers=merchant.headers)).json()
    assert (charge["failure_code"], charge["failure_message"]) == ("gateway_unavailable", error["message"])
    assert [row[:2] for row in await attempt_rows(runtime, merchant.id, error["charge"])] == [
        ("stripe", "not_sent"),
        ("braintree", "not_sent"),
    ]


async def test_a_refusal_then_an_approval_charges_on_the_second_gateway(
    client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await post(client, merchant, "/v1/charges", charge_body(stripe="tok_nonexistent", adyen=None))

    assert response.status_code == 201, response.text
    assert (response.json()["status"], response.json()["gateway"]) == ("succeeded", "braintree")


async def test_a_gateways_message_is_bounded_in_the_answer(
    client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    long_token = "tok_" + "x" * 500  # Stripe echoes it in its message

    response = await post(client, merchant, "/v1/charges", charge_body(stripe=long_token, braintree=None, adyen=None))

    error = error_of(response, 400, "invalid_request_error", "token_rejected")
    assert "…" in error["message"]
    assert len(error["message"]) < 400
    assert "x" * 300 not in response.text


# -- vaulting ---------------------------------------------------------------------------------------


async def test_every_gateway_refusing_its_token_is_400_token_rejected(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    tokens = {"stripe": "tok_nonexistent", "braintree": "fake-consumed-nonce", "adyen": "not-an-adyen-token"}

    response = await post(client, merchant, "/v1/payment_methods", {"tokens": tokens})

    error = error_of(response, 400, "invalid_request_error", "token_rejected")
    assert error["param"] == "tokens.adyen"
    for expected in ("stripe refused", "resource_missing", "braintree refused", "93107", "adyen refused"):
        assert expected in error["message"], error["message"]
    assert await query(runtime.db, "SELECT id FROM payment_methods WHERE merchant_id = :m", m=merchant.id) == []
    [audit] = await query(
        runtime.db,
        "SELECT payload->>'outcome' AS outcome, payload->'details'->'not_vaulted' AS not_vaulted FROM audit_outbox "
        "WHERE payload->>'action' = 'payment_method.vaulted' AND payload->'actor'->>'merchant_id' = :m",
        m=merchant.id,
    )
    assert (audit["outcome"], sorted(audit["not_vaulted"])) == ("failure", ["adyen", "braintree", "stripe"])


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ({"stripe": "pm_doesnotexist"}, "resource_missing"),
        ({"stripe": "nonce-not-for-stripe"}, "unsupported_token"),
        ({"braintree": "fake-consumed-nonce"}, "93107"),
        ({"braintree": "not-a-nonce"}, "93108"),
        ({"sandbox": "tok_bogus"}, "invalid_token"),
    ],
)
async def test_one_refused_token_is_400(
    client: httpx.AsyncClient, merchant: MerchantFixture, tokens: dict[str, str], reason: str
) -> None:
    response = await post(client, merchant, "/v1/payment_methods", {"tokens": tokens})

    error = error_of(response, 400, "invalid_request_error", "token_rejected")
    assert reason in error["message"]


async def test_a_spent_stripe_token_is_400(client: httpx.AsyncClient, fakes: Fakes, merchant: MerchantFixture) -> None:
    token = f"tok_{new_id('used')}"
    fakes.stripe.spend(token)

    response = await post(client, merchant, "/v1/payment_methods", {"tokens": {"stripe": token}})

    assert "token_already_used" in error_of(response, 400, "invalid_request_error", "token_rejected")["message"]


async def test_a_refused_token_and_a_gateway_that_was_down_is_503_naming_both(
    client: httpx.AsyncClient, fakes: Fakes, merchant: MerchantFixture
) -> None:
    fakes.stripe.inject(Fault.ERROR_503_BEFORE_CHARGE)
    tokens = {"stripe": "tok_visa", "braintree": "fake-consumed-nonce"}

    response = await post(client, merchant, "/v1/payment_methods", {"tokens": tokens})

    error = error_of(response, 503, "gateway_error", "gateway_unavailable")
    assert "braintree refused" in error["message"]
    assert "93107" in error["message"]
    assert "stripe could not be reached" in error["message"]


async def test_every_gateway_down_is_503(client: httpx.AsyncClient, fakes: Fakes, merchant: MerchantFixture) -> None:
    fakes.stripe.inject(Fault.ERROR_503_BEFORE_CHARGE)

    response = await post(client, merchant, "/v1/payment_methods", {"tokens": {"stripe": "tok_visa"}})

    assert "stripe could not be reached" in error_of(response, 503, "gateway_error", "gateway_unavailable")["message"]
