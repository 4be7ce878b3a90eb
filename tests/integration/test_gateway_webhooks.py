"""Inbound gateway notifications: a processing Stripe charge settled by a signed event built with the
Stripe SDK; bad and stale signatures refused with no state change; duplicates applied once; disputes."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import stripe
from tests.conftest import make_settings
from tests.factories import MerchantFixture, create_merchant, fetch_rows
from tests.fakes.stripe_server import Fault, StripeFake

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.storage import charges as charges_repo
from payorch.storage import events as events_repo

WEBHOOK_SECRET = "whsec_inbound_test_secret"
URL = "/v1/gateway_webhooks/stripe"


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


@pytest.fixture(scope="module")
async def stripe_runtime(database_url: str, fake: StripeFake) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        gateways=[
            {
                "name": "stripe",
                "kind": "stripe",
                "api_key": "sk_test_fake",
                "base_url": fake.url,
                "timeout_ms": 250,
                "webhook_secret": WEBHOOK_SECRET,
            }
        ],
        reconciler={"first_check_seconds": 600, "interval_seconds": 60},
        routing={"deadline_ms": 1500},
        # Every test here leaves an unknown attempt on purpose: that must not open the breaker.
        breaker={"enabled": False},
    )
    runtime = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
            yield runtime, client
    finally:
        fake.release()
        await runtime.aclose()


async def _processing_charge(
    runtime: Runtime, client: httpx.AsyncClient, fake: StripeFake
) -> tuple[MerchantFixture, dict[str, Any], str]:
    """A charge whose Stripe attempt and every lookup within the deadline timed out: 202 processing."""
    merchant = await create_merchant(runtime)
    fake.inject(Fault.HANG, times=100)
    response = await client.post(
        "/v1/charges",
        json={"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"stripe": "tok_visa"}}},
        headers=merchant.headers,
    )
    fake.clear_faults()
    assert response.status_code == 202, response.text
    charge = response.json()
    async with runtime.db.connection() as connection:
        (attempt,) = await charges_repo.list_attempts(connection, merchant.id, charge["id"])
    assert attempt.status == "unknown"
    return merchant, charge, attempt.id


def _signed(event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> dict[str, Any]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp or int(time.time()))
    return {"content": payload.encode(), "headers": {"Stripe-Signature": header, "Content-Type": "application/json"}}


def _succeeded(attempt_id: str, event_id: str = "evt_stripe_1", intent: str = "pi_inbound_1") -> dict[str, Any]:
    return {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": intent,
                "object": "payment_intent",
                "amount_received": 1050,
                "status": "succeeded",
                "metadata": {"attempt_id": attempt_id},
            }
        },
    }


async def _state(runtime: Runtime, merchant: MerchantFixture, charge_id: str) -> tuple[str, list[str]]:
    async with runtime.db.connection() as connection:
        charge = await charges_repo.get_charge(connection, merchant.id, charge_id)
        events = await events_repo.list_for_resource(connection, merchant.id, charge_id)
    assert charge is not None
    return charge.status, [e.type for e in events]


async def test_a_processing_charge_reported_succeeded_becomes_succeeded_once(
    stripe_runtime: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = stripe_runtime
    merchant, charge, attempt_id = await _processing_charge(runtime, client, fake)
    event = _succeeded(attempt_id, event_id=f"evt_ok_{attempt_id}", intent=f"pi_{attempt_id[4:]}")

    first = await client.post(URL, **_signed(event))
    assert first.status_code == 200, first.text
    assert first.json()["outcome"] == "applied"
    fetched = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert fetched["status"] == "succeeded"
    assert fetched["gateway_reference"] == f"pi_{attempt_id[4:]}"
    assert fetched["amount_captured"] == 1050

    again = await client.post(URL, **_signed(event))  # Stripe retries: same event id, fresh signature
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    assert await _state(runtime, merchant, charge["id"]) == ("succeeded", ["charge.processing", "charge.succeeded"])


@pytest.mark.parametrize("problem", ["wrong_secret", "stale", "tampered", "missing"])
async def test_unverifiable_notifications_are_refused_and_change_nothing(
    stripe_runtime: tuple[Runtime, httpx.AsyncClient], fake: StripeFake, problem: str
) -> None:
    runtime, client = stripe_runtime
    merchant, charge, attempt_id = await _processing_charge(runtime, client, fake)
    event = _succeeded(attempt_id, event_id=f"evt_bad_{attempt_id}")
    request = _signed(
        event,
        secret="whsec_not_the_secret" if problem == "wrong_secret" else WEBHOOK_SECRET,
        timestamp=int(time.time()) - 3600 if problem == "stale" else None,
    )
    if problem == "tampered":
        request["content"] = request["content"].replace(b"1050", b"9999")
    if problem == "missing":
        del request["headers"]["Stripe-Signature"]

    response = await client.post(URL, **request)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "signature_verification_failed"
    assert await _state(runtime, merchant, charge["id"]) == ("processing", ["charge.processing"])
    seen = await fetch_rows(runtime.db, "SELECT count(*) FROM gateway_notifications WHERE event_id = $1", event["id"])
    assert seen[0][0] == 0
    # The body named our attempt: its lookup is brought forward, nothing more.
    due = await fetch_rows(runtime.db, "SELECT next_check_at <= now() FROM charge_attempts WHERE id = $1", attempt_id)
    assert due[0][0] is True


async def test_a_dispute_raises_charge_disputed(
    stripe_runtime: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    runtime, client = stripe_runtime
    merchant, charge, attempt_id = await _processing_charge(runtime, client, fake)
    intent = f"pi_{attempt_id[4:]}"
    assert (await client.post(URL, **_signed(_succeeded(attempt_id, f"evt_s_{attempt_id}", intent)))).status_code == 200
    dispute = {
        "id": f"evt_dp_{attempt_id}",
        "object": "event",
        "type": "charge.dispute.created",
        "data": {"object": {"id": "dp_1", "object": "dispute", "payment_intent": intent, "amount": 1050}},
    }
    response = await client.post(URL, **_signed(dispute))
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "disputed"
    status, types = await _state(runtime, merchant, charge["id"])
    assert status == "succeeded"
    assert types == ["charge.processing", "charge.succeeded", "charge.disputed"]
    async with runtime.db.connection() as connection:
        events = await events_repo.list_for_resource(connection, merchant.id, charge["id"])
    assert events[-1].payload["dispute"]["amount"] == 1050


async def test_unknown_gateway_is_404_and_no_api_key_is_needed(
    stripe_runtime: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = stripe_runtime
    response = await client.post("/v1/gateway_webhooks/nope", json={"id": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "gateway_not_found"
    unknown_attempt = await client.post(URL, **_signed(_succeeded("att_" + "0" * 26, "evt_unknown_attempt")))
    assert unknown_attempt.status_code == 200
    assert unknown_attempt.json()["outcome"] == "unknown_attempt"


async def test_a_signed_notification_is_not_refused_for_a_luhn_valid_reference(
    stripe_runtime: tuple[Runtime, httpx.AsyncClient], fake: StripeFake
) -> None:
    """Gateway references can be 16 Luhn-valid digits (Adyen's pspReference): the card-number guard is
    for merchant input, and a refused notification would only be retried by the gateway for days."""
    runtime, client = stripe_runtime
    merchant, charge, attempt_id = await _processing_charge(runtime, client, fake)
    event = _succeeded(attempt_id, event_id=f"evt_luhn_{attempt_id}", intent=f"pi_{attempt_id[4:]}")
    event["data"]["object"]["metadata"]["psp_reference"] = "4111111111111111"

    response = await client.post(URL, **_signed(event))

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "applied"
    assert (await _state(runtime, merchant, charge["id"]))[0] == "succeeded"


async def test_merchant_routes_still_refuse_card_numbers(stripe_runtime: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = stripe_runtime
    merchant = await create_merchant(runtime)
    response = await client.post(
        "/v1/charges",
        json={
            "amount": 100,
            "currency": "usd",
            "payment_method": {"tokens": {"stripe": "tok_visa"}},
            "metadata": {"ref": "4111111111111111"},
        },
        headers=merchant.headers,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "card_data_not_allowed"
