"""POST /v1/charges/{id}/capture and /cancel through the real app, the sandbox gateway and its ledger,
and through the Stripe adapter against the protocol-level Stripe fake for lost answers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.conftest import make_settings
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query
from tests.fakes.stripe_server import Fault, StripeFake

from payorch.app import create_app
from payorch.gateways.stripe.config import StripeConfig
from payorch.runtime import Runtime


@pytest.fixture
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


async def rows(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await query(runtime.db, sql, **params)]


async def sandbox_payment(runtime: Runtime, charge_id: str) -> tuple[str, int, int]:
    [row] = await rows(
        runtime, "SELECT status, amount, amount_captured FROM sandbox_payments WHERE charge_id = :c", c=charge_id
    )
    return row  # type: ignore[return-value]


async def sandbox_operations(runtime: Runtime, charge_id: str) -> list[tuple[str, int, str]]:
    return await rows(  # type: ignore[return-value]
        runtime,
        "SELECT o.kind, o.amount, o.idempotency_key FROM sandbox_operations o JOIN sandbox_payments p "
        "ON p.gateway = o.gateway AND p.payment_id = o.payment_id WHERE p.charge_id = :c ORDER BY o.created_at",
        c=charge_id,
    )


async def audit_actions(runtime: Runtime, charge_id: str) -> list[tuple[str, str]]:
    return await rows(  # type: ignore[return-value]
        runtime,
        "SELECT payload->>'action', payload->>'outcome' FROM audit_outbox "
        "WHERE payload->'resource'->>'id' = :c AND payload->>'action' IN ('charge.captured', 'charge.canceled') "
        "ORDER BY seq",
        c=charge_id,
    )


async def authorize(client: httpx.AsyncClient, merchant: MerchantFixture, amount: int = 1050) -> dict[str, Any]:
    response = await post_charge(client, merchant, charge_body(amount=amount, capture=False))
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "authorized"
    return response.json()  # type: ignore[no-any-return]


def assert_error(response: httpx.Response, status: int, code: str, error_type: str = "invalid_request_error") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert error["message"]
    assert error["request_id"] == response.headers["request-id"]


async def test_capture_in_full(runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    charge = await authorize(client, merchant)

    response = await client.post(f"/v1/charges/{charge['id']}/capture", headers=merchant.headers)

    assert response.status_code == 200, response.text
    captured = response.json()
    assert (captured["status"], captured["amount_captured"], captured["captured"]) == ("succeeded", 1050, True)
    assert await sandbox_payment(runtime, charge["id"]) == ("captured", 1050, 1050)
    assert await sandbox_operations(runtime, charge["id"]) == [("capture", 1050, f"{charge['id']}_capture_1050")]
    assert await audit_actions(runtime, charge["id"]) == [("charge.captured", "success")]
    fetched = await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)
    assert fetched.json()["status"] == "succeeded"


async def test_partial_capture_once(runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    charge = await authorize(client, merchant, amount=2000)

    response = await client.post(f"/v1/charges/{charge['id']}/capture", json={"amount": 600}, headers=merchant.headers)
    again = await client.post(f"/v1/charges/{charge['id']}/capture", json={"amount": 100}, headers=merchant.headers)

    assert response.status_code == 200, response.text
    assert (response.json()["amount"], response.json()["amount_captured"]) == (2000, 600)
    assert_error(again, 400, "charge_already_captured")
    assert await sandbox_payment(runtime, charge["id"]) == ("captured", 2000, 600)
    assert await sandbox_operations(runtime, charge["id"]) == [("capture", 600, f"{charge['id']}_capture_600")]


async def test_a_capture_the_gateway_already_did_is_not_done_twice(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge = await authorize(client, merchant)
    # An earlier capture request reached the gateway and its answer was lost after the amount was
    # recorded: the retry sends the same idempotency key and the gateway replays its capture.
    await query(
        runtime.db,
        "UPDATE charges SET capture_requested_amount = 700 WHERE merchant_id = :m AND id = :c",
        m=merchant.id,
        c=charge["id"],
    )
    sandbox = runtime.registry.get("sandbox")
    assert sandbox is not None
    earlier = await sandbox.gateway.capture(charge["gateway_reference"], 700, "usd", f"{charge['id']}_capture_700")
    assert earlier.charged

    other_amount = await client.post(
        f"/v1/charges/{charge['id']}/capture", json={"amount": 900}, headers=merchant.headers
    )
    retry = await client.post(f"/v1/charges/{charge['id']}/capture", json={"amount": 700}, headers=merchant.headers)

    assert_error(other_amount, 400, "capture_in_progress")
    assert other_amount.json()["error"]["param"] == "amount"
    assert retry.status_code == 200, retry.text
    assert (retry.json()["status"], retry.json()["amount_captured"]) == ("succeeded", 700)
    assert await sandbox_operations(runtime, charge["id"]) == [("capture", 700, f"{charge['id']}_capture_700")]


async def test_concurrent_captures_capture_once(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge = await authorize(client, merchant)

    responses = await asyncio.gather(
        *(client.post(f"/v1/charges/{charge['id']}/capture", headers=merchant.headers) for _ in range(8))
    )

    for response in responses:
        # Each sees the capture, finds it done, or meets the gateway refusing a duplicate still in
        # flight (as Stripe answers 409 to a key in use): never a second capture.
        assert (response.status_code, response.json().get("error", {}).get("code")) in (
            (200, None),
            (400, "charge_already_captured"),
            (402, "gateway_refused"),
        ), response.text
    assert any(r.status_code == 200 for r in responses)
    assert await sandbox_payment(runtime, charge["id"]) == ("captured", 1050, 1050)
    assert [op[0] for op in await sandbox_operations(runtime, charge["id"])] == ["capture"]
    # One capture happened; refusals met at the gateway are on the trail too (a refused request
    # that then finds the charge captured answers 400 rather than 402).
    trail = await audit_actions(runtime, charge["id"])
    assert trail.count(("charge.captured", "success")) == 1
    failures = [entry for entry in trail if entry != ("charge.captured", "success")]
    assert all(entry == ("charge.captured", "failure") for entry in failures)
    assert len(failures) <= sum(1 for r in responses if r.status_code != 200)


async def test_cancel_voids_an_authorization(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge = await authorize(client, merchant)

    response = await client.post(f"/v1/charges/{charge['id']}/cancel", headers=merchant.headers)
    again = await client.post(f"/v1/charges/{charge['id']}/cancel", headers=merchant.headers)
    capture = await client.post(f"/v1/charges/{charge['id']}/capture", headers=merchant.headers)

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["amount_captured"]) == ("canceled", 0)
    assert again.status_code == 200
    assert again.json()["status"] == "canceled"
    assert_error(capture, 400, "charge_canceled")
    assert await sandbox_payment(runtime, charge["id"]) == ("voided", 1050, 0)
    assert await sandbox_operations(runtime, charge["id"]) == [("void", 0, f"{charge['id']}_void")]
    assert await audit_actions(runtime, charge["id"]) == [("charge.canceled", "success")]


async def test_capture_racing_cancel_agrees_with_the_gateway(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge = await authorize(client, merchant)

    capture, cancel = await asyncio.gather(
        client.post(f"/v1/charges/{charge['id']}/capture", headers=merchant.headers),
        client.post(f"/v1/charges/{charge['id']}/cancel", headers=merchant.headers),
    )

    assert sorted([capture.status_code, cancel.status_code])[0] == 200
    assert {capture.status_code, cancel.status_code} <= {200, 400, 402}
    final = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    ledger_status = (await sandbox_payment(runtime, charge["id"]))[0]
    assert (final["status"], ledger_status) in (("succeeded", "captured"), ("canceled", "voided"))
    assert len(await sandbox_operations(runtime, charge["id"])) == 1


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"amount": 1051}, "amount_too_large", "amount"),
        ({"amount": 0}, "parameter_invalid", "amount"),
        ({"amount": "5"}, "parameter_invalid", "amount"),
        ({"amount": 5.5}, "parameter_invalid", "amount"),
        ({"amount_to_capture": 5}, "parameter_unknown", "amount_to_capture"),
    ],
)
async def test_bad_capture_bodies(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture, body: Any, code: str, param: str
) -> None:
    charge = await authorize(client, merchant)

    response = await client.post(f"/v1/charges/{charge['id']}/capture", json=body, headers=merchant.headers)

    assert_error(response, 400, code)
    assert response.json()["error"]["param"] == param
    assert await sandbox_payment(runtime, charge["id"]) == ("authorized", 1050, 0)


async def test_states_that_cannot_be_captured_or_canceled(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    captured = (await post_charge(client, merchant, charge_body())).json()
    declined = (await post_charge(client, merchant, charge_body("tok_chargeDeclined"))).json()["error"]["charge"]

    assert_error(
        await client.post(f"/v1/charges/{captured['id']}/capture", headers=merchant.headers),
        400,
        "charge_already_captured",
    )
    cancel_captured = await client.post(f"/v1/charges/{captured['id']}/cancel", headers=merchant.headers)
    assert_error(cancel_captured, 400, "charge_already_captured")
    assert "refund" in cancel_captured.json()["error"]["message"]
    assert_error(await client.post(f"/v1/charges/{declined}/capture", headers=merchant.headers), 400, "charge_failed")
    assert_error(await client.post(f"/v1/charges/{declined}/cancel", headers=merchant.headers), 400, "charge_failed")


async def test_another_merchants_or_modes_charge_is_not_found(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge = await authorize(client, merchant)
    other = await create_merchant(runtime)

    for headers in (other.headers, merchant.live_headers):
        for action in ("capture", "cancel"):
            response = await client.post(f"/v1/charges/{charge['id']}/{action}", headers=headers)
            assert_error(response, 404, "resource_missing")
    assert_error(await client.post("/v1/charges/ch_nope/capture", headers=merchant.headers), 404, "resource_missing")
    assert await sandbox_payment(runtime, charge["id"]) == ("authorized", 1050, 0)


# -- lost answers, through the Stripe adapter and the Stripe fake ----------------------------------


@pytest.fixture
async def stripe_app(database_url: str, stripe_fake: StripeFake) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    stripe_fake.clear_faults()
    settings = make_settings(
        database_url,
        # Faults injected by one test must not open the breaker for the next: not what these test.
        breaker={"enabled": False},
        gateways=[
            StripeConfig(
                name="stripe",
                base_url=stripe_fake.url,
                api_key=SecretStr("sk_test_fake"),
                timeout_ms=800,
            )
        ],
    )
    built = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=built))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield built, http
    stripe_fake.clear_faults()
    stripe_fake.release()
    await built.aclose()


async def test_a_lost_capture_answer_leaves_the_charge_and_a_retry_captures_once(
    stripe_app: tuple[Runtime, httpx.AsyncClient], stripe_fake: StripeFake
) -> None:
    built, http = stripe_app
    merchant = await create_merchant(built)
    body = {"amount": 3000, "currency": "usd", "capture": False, "payment_method": {"tokens": {"stripe": "tok_visa"}}}
    charge = (await http.post("/v1/charges", json=body, headers=merchant.headers)).json()
    assert charge["status"] == "authorized", charge

    stripe_fake.inject(Fault.RESET_AFTER_CHARGE)
    lost = await http.post(f"/v1/charges/{charge['id']}/capture", json={"amount": 2500}, headers=merchant.headers)
    unchanged = (await http.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    retry = await http.post(f"/v1/charges/{charge['id']}/capture", json={"amount": 2500}, headers=merchant.headers)

    assert_error(lost, 502, "gateway_outcome_unknown", "gateway_error")
    assert (unchanged["status"], unchanged["amount_captured"]) == ("authorized", 0)
    assert retry.status_code == 200, retry.text
    assert (retry.json()["status"], retry.json()["amount_captured"]) == ("succeeded", 2500)
    [ledger] = [c for c in stripe_fake.ledger if c.reference == charge["gateway_reference"]]
    assert (ledger.status, ledger.amount_captured) == ("succeeded", 2500)


async def test_an_unreachable_gateway_leaves_the_charge_authorized(
    stripe_app: tuple[Runtime, httpx.AsyncClient], stripe_fake: StripeFake
) -> None:
    built, http = stripe_app
    merchant = await create_merchant(built)
    body = {"amount": 3000, "currency": "usd", "capture": False, "payment_method": {"tokens": {"stripe": "tok_visa"}}}
    charge = (await http.post("/v1/charges", json=body, headers=merchant.headers)).json()

    stripe_fake.inject(Fault.ERROR_503_BEFORE_CHARGE)
    refused = await http.post(f"/v1/charges/{charge['id']}/cancel", headers=merchant.headers)
    retry = await http.post(f"/v1/charges/{charge['id']}/cancel", headers=merchant.headers)

    assert_error(refused, 503, "gateway_unavailable", "gateway_error")
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "canceled"
    [ledger] = [c for c in stripe_fake.ledger if c.reference == charge["gateway_reference"]]
    assert ledger.status == "canceled"


async def test_follow_up_routes_document_their_answers(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    for action in ("capture", "cancel"):
        responses = paths[f"/v1/charges/{{charge_id}}/{action}"]["post"]["responses"]
        assert {"200", "400", "401", "402", "404", "429", "502", "503"} <= set(responses), action
        assert responses["502"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
    refunds = paths["/v1/refunds"]["post"]
    assert {"201", "202", "400", "402", "409", "503"} <= set(refunds["responses"])
    assert refunds["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RefundCreate")
    assert any(p["name"] == "Idempotency-Key" for p in refunds["parameters"])
    assert "404" in paths["/v1/refunds/{refund_id}"]["get"]["responses"]
    vault = paths["/v1/payment_methods"]["post"]
    assert {"201", "400", "409", "503"} <= set(vault["responses"])
    assert "404" in paths["/v1/payment_methods/{payment_method_id}"]["get"]["responses"]
