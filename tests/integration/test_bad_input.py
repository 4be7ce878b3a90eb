"""Bad input gets a clear 4xx with the error envelope, never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.factories import MerchantFixture, charge_body, create_merchant

from payorch.runtime import Runtime

TOKENS = {"tokens": {"sandbox": "tok_visa"}}


@pytest.fixture(scope="module")
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


def assert_envelope(
    response: httpx.Response, status: int, error_type: str, code: str | None = None, param: str | None = None
) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type
    assert error["request_id"] == response.headers["request-id"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


BAD_BODIES: list[tuple[str, Any, str, str]] = [
    ("amount zero", {"amount": 0, "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    ("amount negative", {"amount": -5, "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    ("amount fractional", {"amount": 10.5, "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    (
        "amount float integral",
        {"amount": 10.0, "currency": "usd", "payment_method": TOKENS},
        "parameter_invalid",
        "amount",
    ),
    ("amount string", {"amount": "1000", "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    ("amount bool", {"amount": True, "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    (
        "amount over int64",
        {"amount": 2**63, "currency": "usd", "payment_method": TOKENS},
        "parameter_invalid",
        "amount",
    ),
    ("amount huge", {"amount": 10**40, "currency": "usd", "payment_method": TOKENS}, "parameter_invalid", "amount"),
    ("unknown currency", {"amount": 100, "currency": "xyz", "payment_method": TOKENS}, "parameter_invalid", "currency"),
    (
        "malformed currency",
        {"amount": 100, "currency": "us", "payment_method": TOKENS},
        "parameter_invalid",
        "currency",
    ),
    ("currency number", {"amount": 100, "currency": 840, "payment_method": TOKENS}, "parameter_invalid", "currency"),
    ("missing amount", {"currency": "usd", "payment_method": TOKENS}, "parameter_missing", "amount"),
    ("missing payment method", {"amount": 100, "currency": "usd"}, "parameter_missing", "payment_method"),
    (
        "unknown field",
        {"amount": 100, "currency": "usd", "payment_method": TOKENS, "cvc": "123"},
        "parameter_unknown",
        "cvc",
    ),
    ("body not an object", [1, 2, 3], "parameter_invalid", None),
    (
        "empty tokens",
        {"amount": 100, "currency": "usd", "payment_method": {"tokens": {}}},
        "parameter_invalid",
        "payment_method.tokens",
    ),
    (
        "capture string",
        {"amount": 100, "currency": "usd", "payment_method": TOKENS, "capture": "yes"},
        "parameter_invalid",
        "capture",
    ),
    (
        "metadata nested",
        {"amount": 100, "currency": "usd", "payment_method": TOKENS, "metadata": {"a": {"b": 1}}},
        "parameter_invalid",
        "metadata.a",
    ),
    (
        "token for no configured gateway",
        {"amount": 100, "currency": "usd", "payment_method": {"tokens": {"stripe": "tok_visa"}}},
        "gateway_not_configured",
        "payment_method.tokens.stripe",
    ),
    (
        "unknown pm id",
        {"amount": 100, "currency": "usd", "payment_method": "pm_0123456789abcdefghjkmnpqrs"},
        "resource_missing",
        "payment_method",
    ),
]


@pytest.mark.parametrize(("case", "body", "code", "param"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
async def test_bad_bodies_are_400(
    client: httpx.AsyncClient, merchant: MerchantFixture, case: str, body: Any, code: str, param: str | None
) -> None:
    response = await client.post("/v1/charges", json=body, headers=merchant.headers)
    assert_envelope(response, 400, "invalid_request_error", code, param)


async def test_a_bad_body_creates_no_charge(runtime: Runtime, client: httpx.AsyncClient) -> None:
    fresh = await create_merchant(runtime)
    await client.post(
        "/v1/charges", json={"amount": 0, "currency": "usd", "payment_method": TOKENS}, headers=fresh.headers
    )
    assert (await client.get("/v1/charges", headers=fresh.headers)).json()["data"] == []


async def test_malformed_json(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await client.post(
        "/v1/charges", content=b'{"amount": 100,', headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert_envelope(response, 400, "invalid_request_error", "invalid_json")


async def test_wrong_content_type(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await client.post(
        "/v1/charges",
        content=b"amount=100&currency=usd",
        headers={**merchant.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_envelope(response, 415, "invalid_request_error", "unsupported_media_type")


async def test_oversized_body(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    body = charge_body(description="x" * 200_000)
    response = await client.post("/v1/charges", json=body, headers=merchant.headers)
    assert_envelope(response, 413, "invalid_request_error", "payload_too_large")


async def test_oversized_chunked_body(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"amount": 100, "description": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    response = await client.post(
        "/v1/charges", content=chunks(), headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert_envelope(response, 413, "invalid_request_error", "payload_too_large")


@pytest.mark.parametrize(
    ("case", "authorization", "code"),
    [
        ("missing", None, "missing_api_key"),
        ("not bearer", "Basic dXNlcjpwYXNz", "missing_api_key"),
        ("malformed", "Bearer sk_test_short", "invalid_api_key"),
        ("unknown", "Bearer sk_test_" + "A" * 44, "invalid_api_key"),
        ("publishable-looking", "Bearer pk_test_" + "A" * 44, "invalid_api_key"),
    ],
)
async def test_bad_keys_are_401(client: httpx.AsyncClient, case: str, authorization: str | None, code: str) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.post("/v1/charges", json=charge_body(), headers=headers)
    assert_envelope(response, 401, "authentication_error", code)


async def test_revoked_key_is_401(runtime: Runtime, client: httpx.AsyncClient) -> None:
    from payorch.storage import merchants as repo

    fresh = await create_merchant(runtime)
    assert (await client.get("/v1/charges", headers=fresh.headers)).status_code == 200
    async with runtime.db.connection() as connection:
        assert await repo.revoke_api_key(connection, fresh.key_id) == fresh.id
    response = await client.get("/v1/charges", headers=fresh.headers)
    assert_envelope(response, 401, "authentication_error", "invalid_api_key")


async def test_a_key_with_a_wrong_secret_is_401(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    tampered = merchant.key[:-1] + ("B" if merchant.key[-1] != "B" else "C")
    response = await client.get("/v1/charges", headers={"Authorization": f"Bearer {tampered}"})
    assert_envelope(response, 401, "authentication_error", "invalid_api_key")


async def test_idempotency_key_over_255_characters(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await client.post(
        "/v1/charges", json=charge_body(), headers={**merchant.headers, "Idempotency-Key": "k" * 256}
    )
    assert_envelope(response, 400, "invalid_request_error", param="Idempotency-Key")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "starting_after=a&ending_before=b"])
async def test_bad_list_queries(client: httpx.AsyncClient, merchant: MerchantFixture, query: str) -> None:
    response = await client.get(f"/v1/charges?{query}", headers=merchant.headers)
    assert_envelope(response, 400, "invalid_request_error")


async def test_unknown_route_and_method(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    assert_envelope(await client.get("/v1/nothing", headers=merchant.headers), 404, "invalid_request_error")
    assert_envelope(await client.delete("/v1/charges", headers=merchant.headers), 405, "invalid_request_error")
