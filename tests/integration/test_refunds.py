"""POST/GET /v1/refunds through the real app, the sandbox gateway and its ledger; lost answers
through the Stripe adapter against the protocol-level Stripe fake."""

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


async def ledger(runtime: Runtime, charge_id: str) -> tuple[int, int, list[int]]:
    """(captured, refunded, each refund operation's amount) on the sandbox's own books."""
    [(captured, refunded, payment_id)] = await rows(
        runtime,
        "SELECT amount_captured, amount_refunded, payment_id FROM sandbox_payments WHERE charge_id = :c",
        c=charge_id,
    )
    operations = await rows(
        runtime,
        "SELECT amount FROM sandbox_operations WHERE payment_id = :p AND kind = 'refund' ORDER BY created_at",
        p=payment_id,
    )
    return captured, refunded, [amount for (amount,) in operations]


async def refund_audit(runtime: Runtime, refund_id: str) -> list[str]:
    found = await rows(
        runtime,
        "SELECT payload->>'action' FROM audit_outbox WHERE payload->'resource'->>'id' = :r ORDER BY seq",
        r=refund_id,
    )
    return [action for (action,) in found]


async def captured_charge(client: httpx.AsyncClient, merchant: MerchantFixture, amount: int = 1000) -> str:
    response = await post_charge(client, merchant, charge_body(amount=amount))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def refund(
    client: httpx.AsyncClient, merchant: MerchantFixture, key: str | None = None, **body: Any
) -> httpx.Response:
    headers = dict(merchant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/v1/refunds", json=body, headers=headers)


def assert_error(response: httpx.Response, status: int, code: str, error_type: str = "invalid_request_error") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert error["message"]
    assert error["request_id"] == response.headers["request-id"]


async def test_partial_refunds_up_to_the_captured_amount(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge_id = await captured_charge(client, merchant)

    first = await refund(client, merchant, charge=charge_id, amount=300, reason="requested_by_customer")
    second = await refund(client, merchant, charge=charge_id, amount=500, metadata={"ticket": "42"})
    too_much = await refund(client, merchant, charge=charge_id, amount=201)
    rest = await refund(client, merchant, charge=charge_id)
    none_left = await refund(client, merchant, charge=charge_id, amount=1)

    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"].startswith("re_")
    assert (body["object"], body["status"], body["amount"], body["currency"], body["charge"]) == (
        "refund",
        "succeeded",
        300,
        "usd",
        charge_id,
    )
    assert (body["reason"], body["gateway"]) == ("requested_by_customer", "sandbox")
    assert second.json()["metadata"] == {"ticket": "42"}
    assert_error(too_much, 400, "amount_too_large")
    assert too_much.json()["error"]["param"] == "amount"
    assert (rest.status_code, rest.json()["amount"]) == (201, 200)
    assert_error(none_left, 400, "charge_already_refunded")
    charge = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert (charge["amount_refunded"], charge["refunded"]) == (1000, True)
    assert await ledger(runtime, charge_id) == (1000, 1000, [300, 500, 200])
    fetched = await client.get(f"/v1/refunds/{body['id']}", headers=merchant.headers)
    assert fetched.status_code == 200
    assert fetched.json() == body
    assert await refund_audit(runtime, body["id"]) == ["refund.created", "refund.succeeded"]


async def test_twenty_concurrent_refunds_never_refund_more_than_captured(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge_id = await captured_charge(client, merchant, amount=1000)

    responses = await asyncio.gather(*(refund(client, merchant, charge=charge_id, amount=150) for _ in range(20)))

    succeeded = [r for r in responses if r.status_code == 201]
    refused = [r for r in responses if r.status_code == 400]
    assert len(succeeded) == 6  # 6 x 150 = 900 <= 1000 < 7 x 150
    assert len(refused) == 14
    assert {r.json()["error"]["code"] for r in refused} == {"amount_too_large"}
    captured, refunded, operations = await ledger(runtime, charge_id)
    assert (captured, refunded, operations) == (1000, 900, [150] * 6)
    charge = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert charge["amount_refunded"] == 900
    [(count, total)] = await rows(
        runtime,
        "SELECT count(*), sum(amount) FROM refunds WHERE merchant_id = :m AND status = 'succeeded'",
        m=merchant.id,
    )
    assert (count, total) == (6, 900)


async def test_idempotent_refund_replays_and_refunds_once(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge_id = await captured_charge(client, merchant)

    first = await refund(client, merchant, "refund-key-1", charge=charge_id, amount=400)
    again = await refund(client, merchant, "refund-key-1", charge=charge_id, amount=400)
    other = await refund(client, merchant, "refund-key-1", charge=charge_id, amount=401)
    charge_path = await client.post(
        "/v1/charges", json=charge_body(), headers={**merchant.headers, "Idempotency-Key": "refund-key-1"}
    )

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert_error(other, 400, "idempotency_key_reused", "idempotency_error")
    assert_error(charge_path, 400, "idempotency_key_reused", "idempotency_error")
    assert await ledger(runtime, charge_id) == (1000, 400, [400])


async def test_a_refund_left_pending_by_a_crash_is_resent_once(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge_id = await captured_charge(client, merchant)
    crashed = await refund(client, merchant, charge=charge_id, amount=250)
    refund_id = crashed.json()["id"]
    # Put it back as a crash would have left it: the gateway refunded, payorch never wrote the answer.
    await query(
        runtime.db,
        "UPDATE refunds SET status = 'pending', gateway_reference = NULL, "
        "updated_at = now() - interval '1 hour' WHERE merchant_id = :m AND id = :r",
        m=merchant.id,
        r=refund_id,
    )
    await query(
        runtime.db,
        "UPDATE charges SET amount_refunded = 0 WHERE merchant_id = :m AND id = :c",
        m=merchant.id,
        c=charge_id,
    )

    resolved = await runtime.refunds.resolve_once()

    assert refund_id in [r.id for r in resolved]
    fetched = (await client.get(f"/v1/refunds/{refund_id}", headers=merchant.headers)).json()
    assert fetched["status"] == "succeeded"
    charge = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert charge["amount_refunded"] == 250
    assert await ledger(runtime, charge_id) == (1000, 250, [250])


async def test_refunds_of_charges_that_cannot_be_refunded(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    authorized = (await post_charge(client, merchant, charge_body(capture=False))).json()["id"]
    declined = (await post_charge(client, merchant, charge_body("tok_chargeDeclined"))).json()["error"]["charge"]
    canceled = (await post_charge(client, merchant, charge_body(capture=False))).json()["id"]
    assert (await client.post(f"/v1/charges/{canceled}/cancel", headers=merchant.headers)).status_code == 200
    other_merchant = await create_merchant(runtime)
    others = await captured_charge(client, other_merchant)

    assert_error(await refund(client, merchant, charge=authorized), 400, "charge_not_captured")
    assert_error(await refund(client, merchant, charge=declined), 400, "charge_not_refundable")
    assert_error(await refund(client, merchant, charge=canceled), 400, "charge_not_refundable")
    missing = await refund(client, merchant, charge=others)
    assert_error(missing, 400, "resource_missing")
    assert missing.json()["error"]["param"] == "charge"
    assert_error(await refund(client, merchant, charge="ch_nope"), 400, "resource_missing")
    assert await ledger(runtime, others) == (1000, 0, [])
    [(count,)] = await rows(runtime, "SELECT count(*) FROM refunds WHERE merchant_id = :m", m=merchant.id)
    assert count == 0


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"amount": 100}, "parameter_missing", "charge"),
        ({"charge": "CHARGE", "amount": 0}, "parameter_invalid", "amount"),
        ({"charge": "CHARGE", "amount": -1}, "parameter_invalid", "amount"),
        ({"charge": "CHARGE", "amount": 1.5}, "parameter_invalid", "amount"),
        ({"charge": "CHARGE", "amount": "100"}, "parameter_invalid", "amount"),
        ({"charge": "CHARGE", "reason": "changed_my_mind"}, "parameter_invalid", "reason"),
        ({"charge": "CHARGE", "metadata": {"a": {"b": 1}}}, "parameter_invalid", "metadata.a"),
        ({"charge": "CHARGE", "refund_application_fee": True}, "parameter_unknown", "refund_application_fee"),
    ],
)
async def test_bad_refund_bodies(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture, body: dict[str, Any], code: str, param: str
) -> None:
    charge_id = await captured_charge(client, merchant)
    if body.get("charge") == "CHARGE":
        body = {**body, "charge": charge_id}

    response = await client.post("/v1/refunds", json=body, headers=merchant.headers)

    assert_error(response, 400, code)
    assert response.json()["error"]["param"] == param
    assert await ledger(runtime, charge_id) == (1000, 0, [])


async def test_another_merchants_refund_is_not_found(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    charge_id = await captured_charge(client, merchant)
    refund_id = (await refund(client, merchant, charge=charge_id, amount=10)).json()["id"]
    other = await create_merchant(runtime)

    assert_error(await client.get(f"/v1/refunds/{refund_id}", headers=other.headers), 404, "resource_missing")
    assert_error(await client.get(f"/v1/refunds/{refund_id}", headers=merchant.live_headers), 404, "resource_missing")
    assert_error(await client.get("/v1/refunds/re_nope", headers=merchant.headers), 404, "resource_missing")


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
        reconciler={"first_check_seconds": 0, "interval_seconds": 0.2},
    )
    built = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=built))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield built, http
    stripe_fake.clear_faults()
    stripe_fake.release()
    await built.aclose()


async def wait_for_status(http: httpx.AsyncClient, merchant: MerchantFixture, refund_id: str, built: Runtime) -> str:
    """Run the resolver until the refund is final (a deadline, not a sleep)."""
    deadline = asyncio.get_running_loop().time() + 30
    while asyncio.get_running_loop().time() < deadline:
        status = (await http.get(f"/v1/refunds/{refund_id}", headers=merchant.headers)).json()["status"]
        if status in ("succeeded", "failed"):
            return str(status)
        await built.refunds.resolve_once()
        await asyncio.sleep(0.2)
    raise AssertionError(f"refund {refund_id} still not final")


async def test_a_lost_refund_answer_is_processing_then_resolved_once(
    stripe_app: tuple[Runtime, httpx.AsyncClient], stripe_fake: StripeFake
) -> None:
    built, http = stripe_app
    merchant = await create_merchant(built)
    body = {"amount": 3000, "currency": "usd", "payment_method": {"tokens": {"stripe": "tok_visa"}}}
    charge = (await http.post("/v1/charges", json=body, headers=merchant.headers)).json()
    assert charge["status"] == "succeeded", charge

    stripe_fake.inject(Fault.RESET_AFTER_CHARGE)
    lost = await http.post(
        "/v1/refunds",
        json={"charge": charge["id"], "amount": 1200},
        headers={**merchant.headers, "Idempotency-Key": "k1"},
    )

    assert lost.status_code == 202, lost.text
    assert lost.json()["status"] == "processing"
    mid = (await http.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert mid["amount_refunded"] == 0
    assert await wait_for_status(http, merchant, lost.json()["id"], built) == "succeeded"
    final = (await http.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert final["amount_refunded"] == 1200
    [gateway_charge] = [c for c in stripe_fake.ledger if c.reference == charge["gateway_reference"]]
    assert gateway_charge.refunds == [1200]
    replay = await http.post(
        "/v1/refunds",
        json={"charge": charge["id"], "amount": 1200},
        headers={**merchant.headers, "Idempotency-Key": "k1"},
    )
    assert (replay.status_code, replay.json()["status"]) == (201, "succeeded")
    assert gateway_charge.refunds == [1200]


async def test_an_unreachable_gateway_fails_the_refund_and_frees_the_amount(
    stripe_app: tuple[Runtime, httpx.AsyncClient], stripe_fake: StripeFake
) -> None:
    built, http = stripe_app
    merchant = await create_merchant(built)
    body = {"amount": 3000, "currency": "usd", "payment_method": {"tokens": {"stripe": "tok_visa"}}}
    charge = (await http.post("/v1/charges", json=body, headers=merchant.headers)).json()

    stripe_fake.inject(Fault.ERROR_503_BEFORE_CHARGE)
    refused = await http.post("/v1/refunds", json={"charge": charge["id"]}, headers=merchant.headers)
    retry = await http.post("/v1/refunds", json={"charge": charge["id"]}, headers=merchant.headers)

    assert_error(refused, 503, "gateway_unavailable", "gateway_error")
    assert refused.json()["error"]["charge"] == charge["id"]
    assert (retry.status_code, retry.json()["amount"]) == (201, 3000)
    [gateway_charge] = [c for c in stripe_fake.ledger if c.reference == charge["gateway_reference"]]
    assert gateway_charge.refunds == [3000]
