"""A correctly signed gateway notification whose fields cannot be stored (longer than their column, a
NUL, a lone surrogate, an amount past bigint) is a 400 in the error envelope, stores nothing and is
logged (issue 18). Each gateway's real signing: Stripe's SDK signature header, Braintree's SDK
``bt_signature`` (its webhook testing gateway), Adyen's HMAC over the item written out by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import stripe
from orchestration_support import Fakes, app_client, gateway_configs, running_fakes, runtime_for
from tests.factories import query

from payorch.runtime import Runtime

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import braintree

STRIPE_SECRET = "whsec_bounds_secret"
ADYEN_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
LONG = "x" * 256
NUL = "ab\x00cd"
SURROGATE = "ab\ud800cd"


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(scope="module")
async def runtime(database_url: str, fakes: Fakes) -> AsyncIterator[Runtime]:
    gateways = gateway_configs(fakes)
    gateways[0]["webhook_secret"] = STRIPE_SECRET
    gateways[2]["webhook_secret"] = ADYEN_KEY
    async with runtime_for(database_url, gateways, breaker={"enabled": False}) as built:
        yield built


@pytest.fixture(scope="module")
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(runtime) as http:
        yield http


# -- each gateway's signing ---------------------------------------------------------------------------


def stripe_request(event_id: str = "evt_bounds", **fields: Any) -> tuple[dict[str, str], bytes]:
    obj: dict[str, Any] = {
        "id": fields.get("reference", "pi_bounds"),
        "object": "payment_intent",
        "amount_received": fields.get("amount", 1500),
        "metadata": {"attempt_id": fields.get("attempt_id", "att_bounds")},
    }
    event = {
        "id": event_id,
        "object": "event",
        "type": fields.get("type", "payment_intent.succeeded"),
        "data": {"object": obj},
    }
    payload = json.dumps(event)  # ensure_ascii: a NUL or lone surrogate travels as a \\u escape
    header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET, int(time.time()))
    return {"Stripe-Signature": header, "Content-Type": "application/json"}, payload.encode()


def adyen_request(
    psp: str = "PSPBOUNDS", reference: str = "att_bounds", event_code: str = "AUTHORISATION"
) -> tuple[dict[str, str], bytes]:
    item: dict[str, Any] = {
        "pspReference": psp,
        "originalReference": "",
        "merchantAccountCode": "PayorchECOM",
        "merchantReference": reference,
        "amount": {"value": 2500, "currency": "EUR"},
        "eventCode": event_code,
        "success": "true",
    }
    signing = f"{psp}::PayorchECOM:{reference}:2500:EUR:{event_code}:true"
    digest = hmac.new(bytes.fromhex(ADYEN_KEY), signing.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    item["additionalData"] = {"hmacSignature": base64.b64encode(digest).decode()}
    body = json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})
    return {"Content-Type": "application/json"}, body.encode()


def braintree_request(fakes: Fakes, kind: str, subject_id: str) -> tuple[dict[str, str], bytes]:
    configuration = braintree.Configuration(
        environment=braintree.Environment.Sandbox,
        merchant_id=fakes.braintree.merchant_id,
        public_key=fakes.braintree.public_key,
        private_key=fakes.braintree.private_key,
    )
    signed = braintree.BraintreeGateway(configuration).webhook_testing.sample_notification(kind, subject_id)
    body = urlencode({"bt_signature": signed["bt_signature"], "bt_payload": signed["bt_payload"]})
    return {"Content-Type": "application/x-www-form-urlencoded"}, body.encode()


SETTLED = "transaction_settled"
Build = Callable[[Fakes], tuple[dict[str, str], bytes]]


def fixed(request: Callable[[], tuple[dict[str, str], bytes]]) -> Build:
    """Signed when the test runs: a Stripe signature is stale after five minutes."""
    return lambda _fakes: request()


CASES: dict[str, tuple[str, Build, str]] = {
    "stripe event id too long": ("stripe", fixed(lambda: stripe_request("evt_" + LONG)), "event_id"),
    "stripe reference too long": ("stripe", fixed(lambda: stripe_request(reference="pi_" + LONG)), "reference"),
    "stripe attempt id too long": ("stripe", fixed(lambda: stripe_request(attempt_id="att_" + LONG)), "attempt_id"),
    "stripe kind too long": ("stripe", fixed(lambda: stripe_request(type="payment_intent." + "y" * 200)), "kind"),
    "stripe amount past bigint": ("stripe", fixed(lambda: stripe_request(amount=10**30)), "amount"),
    "adyen psp reference too long": ("adyen", fixed(lambda: adyen_request(psp="P" * 300)), "event_id"),
    "adyen merchant reference too long": ("adyen", fixed(lambda: adyen_request(reference="att_" + LONG)), "attempt_id"),
    "adyen event code too long": ("adyen", fixed(lambda: adyen_request(event_code="E" * 200)), "kind"),
    "braintree transaction id too long": ("braintree", lambda f: braintree_request(f, SETTLED, "t" * 300), "reference"),
    "braintree kind too long": ("braintree", lambda f: braintree_request(f, "k" * 200, "t1"), "kind"),
}

# A NUL or a lone surrogate in a JSON body: the request guard refuses the body before any route
# (api/middleware.py); the inbound bound holds them off as well (tests/unit/test_inbound_fields.py).
UNDECODABLE: dict[str, tuple[str, Callable[[], tuple[dict[str, str], bytes]]]] = {
    "stripe event id with NUL": ("stripe", lambda: stripe_request(NUL)),
    "stripe event id lone surrogate": ("stripe", lambda: stripe_request(SURROGATE)),
    "stripe reference with NUL": ("stripe", lambda: stripe_request(reference=NUL)),
    "stripe attempt id lone surrogate": ("stripe", lambda: stripe_request(attempt_id=SURROGATE)),
    "adyen merchant reference NUL": ("adyen", lambda: adyen_request(reference=NUL)),
}


async def stored_notifications(runtime: Runtime) -> int:
    [row] = await query(runtime.db, "SELECT count(*) AS n FROM gateway_notifications")
    return int(row["n"])


async def audited_notifications(runtime: Runtime) -> int:
    [row] = await query(
        runtime.db,
        "SELECT count(*) AS n FROM audit_outbox WHERE payload->>'action' = 'gateway_notification.received'",
    )
    return int(row["n"])


@pytest.mark.parametrize("case", list(CASES))
async def test_an_unstorable_signed_notification_is_400_and_stores_nothing(
    runtime: Runtime, client: httpx.AsyncClient, fakes: Fakes, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway, build, field = CASES[case]
    headers, body = build(fakes)
    before = (await stored_notifications(runtime), await audited_notifications(runtime))

    with caplog.at_level(logging.WARNING, logger="payorch.webhooks.inbound"):
        response = await client.post(f"/v1/gateway_webhooks/{gateway}", content=body, headers=headers)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "notification_invalid", field)
    assert error["request_id"] == response.headers["request-id"]
    assert (await stored_notifications(runtime), await audited_notifications(runtime)) == before
    [logged] = [r.getMessage() for r in caplog.records if "nothing stored" in r.getMessage()]
    assert f"refused a {gateway} notification: its {field}" in logged
    assert LONG not in logged


@pytest.mark.parametrize("case", list(UNDECODABLE))
async def test_a_signed_notification_holding_a_nul_or_lone_surrogate_is_400_and_stores_nothing(
    runtime: Runtime, client: httpx.AsyncClient, case: str
) -> None:
    gateway, build = UNDECODABLE[case]
    headers, body = build()
    before = (await stored_notifications(runtime), await audited_notifications(runtime))

    response = await client.post(f"/v1/gateway_webhooks/{gateway}", content=body, headers=headers)

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["request_id"]) == ("invalid_request_error", response.headers["request-id"])
    assert (await stored_notifications(runtime), await audited_notifications(runtime)) == before


@pytest.mark.parametrize("gateway", ["stripe", "adyen", "braintree"])
async def test_fields_at_their_bounds_are_accepted(client: httpx.AsyncClient, fakes: Fakes, gateway: str) -> None:
    unique = str(time.time_ns())
    build = {
        "stripe": lambda: stripe_request(("evt_" + unique + "e" * 255)[:255], reference="pi_" + "r" * 252),
        "adyen": lambda: adyen_request(psp="P" + unique, reference="a" * 255),
        "braintree": lambda: braintree_request(fakes, SETTLED, ("t" + unique + "t" * 255)[:255]),
    }[gateway]
    headers, body = build()

    response = await client.post(f"/v1/gateway_webhooks/{gateway}", content=body, headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "unknown_attempt"
