"""Raw card numbers are refused anywhere in a request, before anything is logged, stored, audited or
taken for idempotency (DESIGN.md section 11); JSON nesting is capped in the same pass."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from tests.factories import MerchantFixture, charge_body, create_merchant, query

from payorch.runtime import Runtime

VISA = "4242424242424242"
AMEX_DASHED = "3782-822463-10005"
MASTERCARD_SPACED = "5555 5555 5555 4444"
ALL_FORMS = (VISA, AMEX_DASHED, MASTERCARD_SPACED, "4000-0566-5566-5556", "6011 1111 1111 1117")
DIGITS = {VISA, "378282246310005", "5555555555554444", "4000056655665556", "6011111111111117"}


@pytest.fixture(scope="module")
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


def assert_refused(response: httpx.Response, param: str | None) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "card_data_not_allowed"
    assert error.get("param") == param
    assert error["request_id"] == response.headers["request-id"]
    assert response.headers["cache-control"] == "no-store"
    for digits in DIGITS:
        assert digits not in response.text.replace(" ", "").replace("-", "")


BODIES: list[tuple[str, dict[str, Any], str | None]] = [
    ("description", charge_body(description=f"card {VISA} thanks"), "description"),
    ("description dashed", charge_body(description=AMEX_DASHED), "description"),
    ("description spaced", charge_body(description=f"pay with {MASTERCARD_SPACED}."), "description"),
    ("metadata value", charge_body(metadata={"order": "A1", "note": f"pan={VISA}"}), "metadata.note"),
    ("metadata key", charge_body(metadata={VISA: "x"}), "metadata.424242******4242"),
    ("token", charge_body(VISA), "payment_method.tokens.sandbox"),
    ("token prefixed", charge_body(f"tok_{VISA}"), "payment_method.tokens.sandbox"),
    ("payment method id", {"amount": 100, "currency": "usd", "payment_method": VISA}, "payment_method"),
    ("number not string", {**charge_body(), "amount": int(VISA)}, "amount"),
    ("float literal", {**charge_body(), "amount": float(VISA)}, "amount"),
    ("unknown nested field", {**charge_body(), "card": {"number": MASTERCARD_SPACED, "cvc": "123"}}, "card.number"),
    ("inside a list", {**charge_body(), "cards": [{"n": "1"}, {"n": AMEX_DASHED}]}, "cards.1.n"),
    ("body not an object", [VISA], "0"),  # type: ignore[list-item]
]


@pytest.mark.parametrize(("case", "body", "param"), BODIES, ids=[c[0] for c in BODIES])
async def test_card_numbers_in_the_body_are_refused(
    client: httpx.AsyncClient, merchant: MerchantFixture, case: str, body: Any, param: str | None
) -> None:
    assert_refused(await client.post("/v1/charges", json=body, headers=merchant.headers), param)


@pytest.mark.parametrize("card", ALL_FORMS)
async def test_every_written_form_is_refused(client: httpx.AsyncClient, merchant: MerchantFixture, card: str) -> None:
    response = await client.post("/v1/charges", json=charge_body(metadata={"c": card}), headers=merchant.headers)
    assert_refused(response, "metadata.c")


async def test_a_hidden_duplicate_key_is_refused(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    # The real parser keeps the last "description"; the first still must not get through.
    raw = json.dumps(charge_body())[:-1] + f', "description": "{VISA}", "description": "fine"}}'
    response = await client.post(
        "/v1/charges", content=raw.encode(), headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert_refused(response, "description")


async def test_an_escaped_card_number_is_refused(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    escaped = "".join(f"\\u00{ord(c):x}" for c in VISA)
    raw = json.dumps(charge_body())[:-1] + f', "description": "{escaped}"}}'
    response = await client.post(
        "/v1/charges", content=raw.encode(), headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert_refused(response, "description")


async def test_a_card_number_in_broken_json_is_refused(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await client.post(
        "/v1/charges",
        content=f'{{"amount": 100, "description": "{VISA}'.encode(),
        headers={**merchant.headers, "Content-Type": "application/json"},
    )
    assert_refused(response, None)


@pytest.mark.parametrize(
    ("url", "param"),
    [
        (f"/v1/charges?starting_after={VISA}", "starting_after"),
        ("/v1/charges?limit=10&ending_before=5555+5555+5555+4444", "ending_before"),
        ("/v1/charges?ending_before=3782%2D822463%2D10005", "ending_before"),
        (f"/v1/charges?{VISA}=1", "424242******4242"),
        (f"/v1/charges/{VISA}", "path"),
        (f"/v1/charges/ch_{VISA}", "path"),
    ],
)
async def test_card_numbers_in_the_url_are_refused(
    client: httpx.AsyncClient, merchant: MerchantFixture, url: str, param: str
) -> None:
    assert_refused(await client.get(url, headers=merchant.headers), param)


async def test_a_card_number_as_idempotency_key_is_refused(
    client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await client.post(
        "/v1/charges", json=charge_body(), headers={**merchant.headers, "Idempotency-Key": MASTERCARD_SPACED}
    )
    assert_refused(response, "Idempotency-Key")


NOT_CARDS = [
    "4242424242424241",  # fails Luhn
    "1700000000000",  # epoch milliseconds, Luhn-valid but no card starts with 1 at 13 digits
    "ch_01HZX4242424242424242ABCD",  # a glued id
    "0123456789012345678901234",  # a 25-digit counter
    "order 123-456-789",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
]


@pytest.mark.parametrize("value", NOT_CARDS)
async def test_numbers_that_are_not_cards_pass(
    client: httpx.AsyncClient, merchant: MerchantFixture, value: str
) -> None:
    response = await client.post(
        "/v1/charges", json=charge_body(description=value, metadata={"ref": value}), headers=merchant.headers
    )
    assert response.status_code == 201, response.text
    assert response.json()["description"] == value


async def _count(runtime: Runtime, sql: str, **params: Any) -> int:
    return int((await query(runtime.db, sql, **params))[0][0])


async def test_a_refused_request_leaves_no_trace(
    runtime: Runtime, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = await create_merchant(runtime)
    audit_before = await _count(runtime, "SELECT count(*) FROM audit_outbox WHERE merchant_id = :m", m=fresh.id)
    caplog.set_level(logging.DEBUG)
    headers = {**fresh.headers, "Idempotency-Key": "refused-then-fine"}
    refused = await client.post("/v1/charges", json=charge_body(description=VISA), headers=headers)
    assert_refused(refused, "description")

    # Nothing stored: no charge, no idempotency key taken, no audit event, no card number anywhere.
    assert (await client.get("/v1/charges", headers=fresh.headers)).json()["data"] == []
    taken = "SELECT count(*) FROM idempotency_keys WHERE merchant_id = :m"
    assert await _count(runtime, taken, m=fresh.id) == 0
    audited = "SELECT count(*) FROM audit_outbox WHERE merchant_id = :m"
    assert await _count(runtime, audited, m=fresh.id) == audit_before
    anywhere = "SELECT count(*) FROM audit_outbox WHERE payload::text ~ :p"
    assert await _count(runtime, anywhere, p=f"(^|[^0-9A-Za-z]){VISA}([^0-9A-Za-z]|$)") == 0
    logged = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    assert VISA not in logged
    assert any("card_number in description" in r.getMessage() for r in caplog.records)

    # The key was never taken: the same key with a clean body is a first use, not a mismatch.
    accepted = await client.post("/v1/charges", json=charge_body(description="fine"), headers=headers)
    assert accepted.status_code == 201, accepted.text
    assert "idempotent-replayed" not in accepted.headers


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return value


async def test_json_nesting_is_capped(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    too_deep = await client.post("/v1/charges", json={**charge_body(), "x": _nested(17)}, headers=merchant.headers)
    assert too_deep.status_code == 400, too_deep.text
    assert too_deep.json()["error"]["code"] == "json_too_deep"
    # At the cap the body is parsed as usual: the unknown field is what is wrong with it.
    at_cap = await client.post("/v1/charges", json={**charge_body(), "x": _nested(15)}, headers=merchant.headers)
    assert at_cap.status_code == 400, at_cap.text
    assert at_cap.json()["error"]["code"] == "parameter_unknown"


async def test_brackets_inside_strings_do_not_count(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    body = charge_body(description='[[[[[[[[[[{{{{{{{{{{{{[[[[[[[[[[ \\" [[[[[[[[')
    response = await client.post("/v1/charges", json=body, headers=merchant.headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 60_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'["\\"' + b'"\\' * 20_000,
    ],
    ids=["brackets", "objects", "unterminated escapes"],
)
async def test_hostile_nesting_is_a_clean_400(client: httpx.AsyncClient, merchant: MerchantFixture, raw: bytes) -> None:
    response = await client.post(
        "/v1/charges", content=raw, headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_a_huge_integer_is_a_clean_400(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    raw = json.dumps(charge_body())[:-1] + ', "capture": ' + "7" * 5000 + "}"
    response = await client.post(
        "/v1/charges", content=raw.encode(), headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("request_args", "param"),
    [
        ({"json": charge_body(description="nul \u0000 here")}, "description"),
        ({"json": charge_body(metadata={"k": "\ud800"})}, "metadata.k"),
        ({"json": charge_body(metadata={"\u0000": "v"})}, "metadata.\ufffd"),
    ],
    ids=["nul in a value", "lone surrogate", "nul in a key"],
)
async def test_text_postgres_cannot_store_is_a_clean_400(
    client: httpx.AsyncClient, merchant: MerchantFixture, request_args: dict[str, Any], param: str
) -> None:
    raw = json.dumps(request_args["json"]).encode()  # json.dumps escapes both as \\u0000 and \\ud800
    response = await client.post(
        "/v1/charges", content=raw, headers={**merchant.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_text"
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("url", ["/v1/charges/ch_%00x", "/v1/charges?starting_after=%00"])
async def test_nul_in_the_url_is_a_clean_400(client: httpx.AsyncClient, merchant: MerchantFixture, url: str) -> None:
    response = await client.get(url, headers=merchant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_text"


async def test_unknown_query_parameters_are_refused(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await client.get("/v1/charges?limt=5", headers=merchant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "parameter_unknown"
    assert response.json()["error"]["param"] == "limt"
    assert (await client.get("/v1/charges?limit=5", headers=merchant.headers)).status_code == 200
