"""Issue 18, card numbers: the request guard reads a body as the app's JSON parser does (UTF-16,
UTF-32, behind a byte-order mark), a body that does not decode or hides a NUL is a clean 400, and a
header payorch reads once may come once. Through the real app, against the real database: a refused
card is kept nowhere (charges, events, idempotency keys, audit outbox, webhook deliveries)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from tests.card_storage import assert_kept_nowhere, assert_nothing_kept
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.fakes.merchant_endpoint import MerchantEndpoint
from tests.webhook_support import deliver_until, webhook_runtime

from payorch.runtime import Runtime

VISA = "4242424242424242"
ENCODINGS = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-8-sig"]
JSON = {"Content-Type": "application/json"}
DESCRIPTION = "Grüße aus 東京 — order 42"


@pytest.fixture(scope="module")
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


def assert_envelope(response: httpx.Response, status: int, code: str, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == code
    assert error.get("param") == param
    assert error["request_id"] == response.headers["request-id"]
    assert response.headers["cache-control"] == "no-store"
    assert VISA not in response.text
    return error


def encoded(document: Any, encoding: str) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode(encoding)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(
    ("document", "param"),
    [
        (charge_body(metadata={"note": f"card {VISA}"}), "metadata.note"),
        (charge_body(description=VISA), "description"),
        (charge_body(metadata={VISA: "x"}), "metadata.424242******4242"),
        (charge_body(VISA), "payment_method.tokens.sandbox"),
    ],
    ids=["metadata", "description", "key", "token"],
)
async def test_a_card_in_a_body_of_any_encoding_is_refused_and_kept_nowhere(
    runtime: Runtime, client: httpx.AsyncClient, encoding: str, document: dict[str, Any], param: str
) -> None:
    fresh = await create_merchant(runtime)
    headers = {**fresh.headers, **JSON, "Idempotency-Key": f"enc-{encoding}"}
    response = await client.post("/v1/charges", content=encoded(document, encoding), headers=headers)
    assert_envelope(response, 400, "card_data_not_allowed", param)
    await assert_nothing_kept(runtime, fresh.id)


@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_a_clean_body_of_any_encoding_is_read_as_it_was_sent(
    client: httpx.AsyncClient, merchant: MerchantFixture, encoding: str
) -> None:
    document = charge_body(description=DESCRIPTION, metadata={"note": "ü", "order": "1042"})
    headers = {**merchant.headers, **JSON, "Idempotency-Key": f"clean-{encoding}"}
    created = await client.post("/v1/charges", content=encoded(document, encoding), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["description"] == DESCRIPTION
    assert created.json()["metadata"] == {"note": "ü", "order": "1042"}
    # The same document in UTF-8 is the same request: the idempotent reply, byte for byte.
    again = await client.post("/v1/charges", content=encoded(document, "utf-8"), headers=headers)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == created.content


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 100, "currency": "usd", "description": "\xff\xfe"}',  # not UTF-8
        b'{"amount": 100, "currency": "usd", "description": "\xed\xa0"}',  # a cut UTF-8 sequence
        '{"amount": 100}'.encode("utf-16-le") + b"\x00",  # odd length: not UTF-16
        b"\xff\xfe\x00\xd8" + '{"a": 1}'.encode("utf-16-le"),  # BOM, then a lone high surrogate... and more
    ],
    ids=["invalid utf-8", "cut utf-8", "odd utf-16", "broken utf-16"],
)
async def test_a_body_that_does_not_decode_is_a_clean_400(
    client: httpx.AsyncClient, merchant: MerchantFixture, body: bytes
) -> None:
    response = await client.post("/v1/charges", content=body, headers={**merchant.headers, **JSON})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("invalid_json", "invalid_text")
    assert response.json()["error"]["request_id"] == response.headers["request-id"]


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ('"nul \\u0000 here"', "invalid_text", "description"),
        ('"lone \\ud800 surrogate"', "invalid_text", "description"),
        ('"raw \x00 nul"', "invalid_json", None),
    ],
    ids=["escaped nul", "lone surrogate", "raw nul"],
)
async def test_a_nul_in_a_body_of_any_encoding_is_a_clean_400(
    runtime: Runtime, client: httpx.AsyncClient, encoding: str, text: str, code: str, param: str | None
) -> None:
    fresh = await create_merchant(runtime)
    raw = json.dumps(charge_body())[:-1] + f', "description": {text}}}'
    response = await client.post("/v1/charges", content=raw.encode(encoding), headers={**fresh.headers, **JSON})
    assert_envelope(response, 400, code, param)
    await assert_nothing_kept(runtime, fresh.id)


@pytest.mark.parametrize(
    ("repeated", "name"),
    [
        ([("Idempotency-Key", "fine-1"), ("Idempotency-Key", VISA)], "Idempotency-Key"),
        ([("Idempotency-Key", VISA), ("Idempotency-Key", "fine-2")], "Idempotency-Key"),
        ([("Idempotency-Key", "one"), ("Idempotency-Key", "two")], "Idempotency-Key"),
        ([("Content-Type", "application/json"), ("Content-Type", "application/json")], "Content-Type"),
        ([("Content-Type", "application/json"), ("Content-Type", "text/plain")], "Content-Type"),
    ],
)
async def test_a_header_payorch_reads_once_sent_twice_is_refused(
    runtime: Runtime, client: httpx.AsyncClient, repeated: list[tuple[str, str]], name: str
) -> None:
    fresh = await create_merchant(runtime)
    headers = [*fresh.headers.items(), *repeated]
    if name != "Content-Type":
        headers.append(("Content-Type", "application/json"))
    response = await client.post("/v1/charges", content=json.dumps(charge_body()).encode(), headers=headers)
    assert_envelope(response, 400, "header_repeated", name)
    await assert_nothing_kept(runtime, fresh.id)


async def test_authorization_sent_twice_is_refused(runtime: Runtime, client: httpx.AsyncClient) -> None:
    fresh = await create_merchant(runtime)
    other = await create_merchant(runtime)
    headers = [("Authorization", f"Bearer {fresh.key}"), ("Authorization", f"Bearer {other.key}"), *JSON.items()]
    response = await client.post("/v1/charges", content=json.dumps(charge_body()).encode(), headers=headers)
    assert_envelope(response, 400, "header_repeated", "Authorization")
    await assert_nothing_kept(runtime, fresh.id)
    await assert_nothing_kept(runtime, other.id)


async def test_no_card_reaches_a_webhook_delivery(database_url: str) -> None:
    with MerchantEndpoint() as endpoint:
        async with webhook_runtime(database_url) as (runtime, client):
            merchant = await create_merchant(runtime)
            subscription = {"url": endpoint.url, "enabled_events": ["*"]}
            subscribed = await client.post("/v1/webhook_endpoints", json=subscription, headers=merchant.headers)
            assert subscribed.status_code == 201, subscribed.text
            for encoding in ENCODINGS:
                body = encoded(charge_body(metadata={"note": f"pan {VISA}"}), encoding)
                refused = await client.post("/v1/charges", content=body, headers={**merchant.headers, **JSON})
                assert refused.status_code == 400, refused.text
            clean = encoded(charge_body(description=DESCRIPTION), "utf-16")
            created = await client.post("/v1/charges", content=clean, headers={**merchant.headers, **JSON})
            assert created.status_code == 201, created.text
            charge_id = created.json()["id"]
            await deliver_until(runtime, endpoint, lambda arrival: charge_id.encode() in arrival.body)
            await assert_kept_nowhere(runtime, merchant.id, VISA)
    bodies = [arrival.body.decode() for arrival in endpoint.arrivals]
    assert all(VISA not in body for body in bodies)
    delivered = [json.loads(body)["data"]["object"] for body in bodies]
    assert {charge["id"] for charge in delivered} == {charge_id}
    assert all(charge["description"] == DESCRIPTION for charge in delivered)
