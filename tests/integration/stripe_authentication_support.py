"""Shared by the Stripe customer-authentication tests and their fault-injection run: a Runtime with
one Stripe account on the fake (webhooks signed), charges that wait for their customer, and the
fake's side of the story."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import stripe
from tests.conftest import own_app
from tests.factories import MerchantFixture, post_charge, query
from tests.fakes.stripe_server import StripeFake

from payorch.runtime import Runtime

WEBHOOK_SECRET = "whsec_authentication_test"
RETURN_URL = "https://shop.example/paid"


@asynccontextmanager
async def stripe_app(
    database_url: str, fake: StripeFake, *, timeout_ms: int = 1000, **overrides: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A Runtime and app of their own with one Stripe account on ``fake`` (its webhooks signed)."""
    gateway = {
        "name": "stripe",
        "kind": "stripe",
        "api_key": fake.api_key,
        "base_url": fake.url,
        "timeout_ms": timeout_ms,
        "webhook_secret": WEBHOOK_SECRET,
    }
    try:
        async with own_app(database_url, gateways=[gateway], breaker={"enabled": False}, **overrides) as built:
            yield built
    finally:
        fake.release()


def body(token: str = "tok_threeDSecure2Required", **extra: Any) -> dict[str, Any]:  # noqa: S107 - a test card
    return {"amount": 2000, "currency": "eur", "payment_method": {"tokens": {"stripe": token}}, **extra}


async def waiting_charge(client: httpx.AsyncClient, merchant: MerchantFixture, **extra: Any) -> dict[str, Any]:
    response = await post_charge(client, merchant, body(return_url=RETURN_URL, **extra))
    assert response.status_code == 202, response.text
    charge: dict[str, Any] = response.json()
    assert charge["status"] == "requires_action"
    return charge


def succeeded_event(fake: StripeFake, intent_id: str) -> tuple[dict[str, str], bytes]:
    """``payment_intent.succeeded`` for ``intent_id`` as Stripe would sign it."""
    with fake._cond:  # the fake's own record of the intent, as Stripe would send it
        intent = dict(fake._intents[intent_id])
    payload = json.dumps(
        {
            "id": f"evt_{intent_id}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": intent_id,
                    "object": "payment_intent",
                    "amount_received": intent["amount_received"],
                    "metadata": intent["metadata"],
                }
            },
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(payload, WEBHOOK_SECRET, int(time.time()))
    return {"Stripe-Signature": header, "Content-Type": "application/json"}, payload.encode()


async def expire_now(runtime: Runtime, charge_ids: list[str]) -> None:
    """Every one of these charges' authentications at its expiry: due now."""
    await query(
        runtime.db,
        "UPDATE charge_attempts SET next_check_at = now() - interval '1 second' "
        "WHERE charge_id = ANY(:ids) AND status = 'requires_action'",
        ids=charge_ids,
    )


async def statuses(runtime: Runtime, charge_ids: list[str]) -> dict[str, str]:
    rows = await query(runtime.db, "SELECT id, status FROM charges WHERE id = ANY(:ids)", ids=charge_ids)
    return {row["id"]: row["status"] for row in rows}
