"""Refused money actions leave an audit event (PCI DSS 10.2.1.2): written in a transaction of their
own, since the refused request's rolls back, with who, from where, what and outcome ``failure``.
Exactly one per refused request, and a failed audit write never turns the refusal into a 500."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, fetch_rows, post_charge
from tests.integration.audit_sinks_support import counter

from payorch.runtime import Runtime


async def events_of_request(runtime: Runtime, request_id: str) -> list[dict[str, Any]]:
    """Every audit event whose origin is this request, chained (another test's shipper may have run
    on this database) or still in the outbox."""
    chained = await fetch_rows(
        runtime.db,
        "SELECT canonical FROM audit_chain WHERE strpos(canonical, $1) > 0 ORDER BY seq",
        request_id,
    )
    pending = await fetch_rows(
        runtime.db,
        "SELECT payload FROM audit_outbox WHERE payload->'origin'->>'request_id' = $1 ORDER BY seq",
        request_id,
    )
    events = [json.loads(row["canonical"])["event"] for row in chained] + [row["payload"] for row in pending]
    return [event for event in events if event["origin"].get("request_id") == request_id]


async def assert_one_refusal(
    runtime: Runtime,
    merchant: MerchantFixture,
    response: httpx.Response,
    *,
    status: int,
    code: str,
    action: str,
    charge_id: str,
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    [event] = await events_of_request(runtime, response.headers["Request-Id"])
    assert event["action"] == action
    assert event["outcome"] == "failure"
    assert event["actor"] == {"merchant_id": merchant.id, "api_key_id": merchant.key_id, "user": None}
    assert event["origin"]["ip"]
    assert event["resource"] == {"type": "charge", "id": charge_id}
    assert event["details"]["code"] == code
    assert event["details"]["message"] == response.json()["error"]["message"]
    return event


async def authorized(client: httpx.AsyncClient, merchant: MerchantFixture, amount: int = 1000) -> str:
    response = await post_charge(client, merchant, charge_body(amount=amount, capture=False))
    assert response.json()["status"] == "authorized"
    return str(response.json()["id"])


async def captured(client: httpx.AsyncClient, merchant: MerchantFixture, amount: int = 1000) -> str:
    response = await post_charge(client, merchant, charge_body(amount=amount))
    assert response.json()["status"] == "succeeded"
    return str(response.json()["id"])


async def failed(client: httpx.AsyncClient, merchant: MerchantFixture) -> str:
    response = await post_charge(client, merchant, charge_body("tok_chargeDeclined"))
    assert response.status_code == 402
    return str(response.json()["error"]["charge"])


async def refund(client: httpx.AsyncClient, merchant: MerchantFixture, charge: str, **body: Any) -> httpx.Response:
    return await client.post("/v1/refunds", json={"charge": charge, **body}, headers=merchant.headers)


async def test_a_refund_over_the_refundable_amount(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await captured(client, merchant, 1000)
    assert (await refund(client, merchant, charge, amount=600)).status_code == 201
    over = await refund(client, merchant, charge, amount=500, reason="requested_by_customer")
    event = await assert_one_refusal(
        runtime, merchant, over, status=400, code="amount_too_large", action="refund.refused", charge_id=charge
    )
    assert (event["details"]["amount"], event["details"]["reason"]) == (500, "requested_by_customer")
    assert event["origin"]["request_id"] == over.headers["Request-Id"]

    assert (await refund(client, merchant, charge)).status_code == 201  # the 400 remaining
    done = await refund(client, merchant, charge)
    await assert_one_refusal(
        runtime, merchant, done, status=400, code="charge_already_refunded", action="refund.refused", charge_id=charge
    )


async def test_a_refund_of_a_charge_that_cannot_be_refunded(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    uncaptured = await authorized(client, merchant)
    response = await refund(client, merchant, uncaptured)
    await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code="charge_not_captured",
        action="refund.refused",
        charge_id=uncaptured,
    )
    declined = await failed(client, merchant)
    response = await refund(client, merchant, declined)
    await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code="charge_not_refundable",
        action="refund.refused",
        charge_id=declined,
    )
    missing = f"ch_{uuid.uuid4().hex}"
    response = await refund(client, merchant, missing)
    await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code="resource_missing",
        action="refund.refused",
        charge_id=missing,
    )


@pytest.mark.parametrize("state", ["captured", "canceled", "failed"])
async def test_a_capture_of_a_charge_that_is_not_authorized(
    runtime: Runtime, client: httpx.AsyncClient, state: str
) -> None:
    merchant = await create_merchant(runtime)
    if state == "failed":
        charge = await failed(client, merchant)
    else:
        charge = await authorized(client, merchant)
        verb = "capture" if state == "captured" else "cancel"
        assert (await client.post(f"/v1/charges/{charge}/{verb}", headers=merchant.headers)).status_code == 200
    response = await client.post(f"/v1/charges/{charge}/capture", json={"amount": 500}, headers=merchant.headers)
    code = {"captured": "charge_already_captured", "canceled": "charge_canceled", "failed": "charge_failed"}[state]
    event = await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code=code,
        action="charge.capture_refused",
        charge_id=charge,
    )
    assert event["details"]["amount"] == 500


async def test_a_capture_of_more_than_was_authorized(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await authorized(client, merchant, 1000)
    response = await client.post(f"/v1/charges/{charge}/capture", json={"amount": 1001}, headers=merchant.headers)
    event = await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code="amount_too_large",
        action="charge.capture_refused",
        charge_id=charge,
    )
    assert event["details"]["param"] == "amount"


@pytest.mark.parametrize("state", ["captured", "failed"])
async def test_a_cancel_refused(runtime: Runtime, client: httpx.AsyncClient, state: str) -> None:
    merchant = await create_merchant(runtime)
    charge = await (captured(client, merchant) if state == "captured" else failed(client, merchant))
    response = await client.post(f"/v1/charges/{charge}/cancel", headers=merchant.headers)
    code = "charge_already_captured" if state == "captured" else "charge_failed"
    await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=400,
        code=code,
        action="charge.cancel_refused",
        charge_id=charge,
    )


async def test_an_unknown_charge_to_capture_is_a_refusal_too(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    other = await create_merchant(runtime)
    theirs = await authorized(client, other)  # another merchant's charge: 404, and audited as tried
    response = await client.post(f"/v1/charges/{theirs}/capture", headers=merchant.headers)
    await assert_one_refusal(
        runtime,
        merchant,
        response,
        status=404,
        code="resource_missing",
        action="charge.capture_refused",
        charge_id=theirs,
    )


async def test_an_idempotency_key_reused_with_other_parameters_is_not_a_money_refusal(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    """Decided in docs/audit.md: refused before any charge is read; the key's first use is audited."""
    merchant = await create_merchant(runtime)
    charge = await captured(client, merchant)
    key = f"re-{uuid.uuid4().hex}"
    headers = {**merchant.headers, "Idempotency-Key": key}
    first = await client.post("/v1/refunds", json={"charge": charge, "amount": 100}, headers=headers)
    reused = await client.post("/v1/refunds", json={"charge": charge, "amount": 200}, headers=headers)
    assert first.status_code == 201
    assert reused.status_code == 400
    assert reused.json()["error"]["type"] == "idempotency_error"
    assert await events_of_request(runtime, reused.headers["Request-Id"]) == []


async def test_a_failing_audit_write_is_logged_and_counted_never_a_500(database_url: str) -> None:
    """The refusal's own audit write fails (a trigger refuses its row): the refusal is answered as
    it would have been, and the loss is counted."""
    marker = f"ch_unwritable_{uuid.uuid4().hex[:12]}"
    name = marker.replace("-", "_")
    async with own_app(database_url) as (runtime, client):
        await fetch_rows(
            runtime.db,
            f"CREATE FUNCTION refuse_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF strpos(NEW.payload::text, '{marker}') > 0 THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$",
        )
        await fetch_rows(
            runtime.db,
            f"CREATE TRIGGER t_{name} BEFORE INSERT ON audit_outbox FOR EACH ROW EXECUTE FUNCTION refuse_{name}()",
        )
        try:
            merchant = await create_merchant(runtime)
            response = await refund(client, merchant, marker)
        finally:
            await fetch_rows(runtime.db, f"DROP TRIGGER t_{name} ON audit_outbox")
            await fetch_rows(runtime.db, f"DROP FUNCTION refuse_{name}()")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "resource_missing"
        assert await events_of_request(runtime, response.headers["Request-Id"]) == []
        assert counter(runtime, "payorch_audit_write_failures_total", kind="refusal") == 1
