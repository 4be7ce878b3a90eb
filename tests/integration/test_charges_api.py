"""POST/GET /v1/charges through the real app, the sandbox gateways and Postgres."""

from __future__ import annotations

import httpx
import pytest
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query

from payorch.runtime import Runtime


@pytest.fixture
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


async def sandbox_books(runtime: Runtime, charge_id: str) -> list[tuple[str, str, int, int]]:
    rows = await query(
        runtime.db,
        "SELECT gateway, status, amount, amount_captured FROM sandbox_payments WHERE charge_id = :c "
        "ORDER BY created_at",
        c=charge_id,
    )
    return [tuple(r) for r in rows]


async def attempts_of(runtime: Runtime, merchant_id: str, charge_id: str) -> list[tuple[int, str, str]]:
    rows = await query(
        runtime.db,
        "SELECT seq, gateway, status FROM charge_attempts WHERE merchant_id = :m AND charge_id = :c ORDER BY seq",
        m=merchant_id,
        c=charge_id,
    )
    return [tuple(r) for r in rows]


async def test_a_charge_succeeds_and_is_recorded(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await post_charge(client, merchant, charge_body(description="Order 1", metadata={"order": "1"}))
    assert response.status_code == 201
    assert response.headers["request-id"].startswith("req_")
    charge = response.json()
    assert charge["id"].startswith("ch_")
    assert charge["status"] == "succeeded"
    assert charge["amount"] == charge["amount_captured"] == 1050
    assert charge["currency"] == "usd"
    assert charge["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2034}
    assert charge["gateway"] == "sandbox"
    assert charge["metadata"] == {"order": "1"}
    assert charge["livemode"] is False
    assert await sandbox_books(runtime, charge["id"]) == [("sandbox", "captured", 1050, 1050)]
    assert await attempts_of(runtime, merchant.id, charge["id"]) == [(1, "sandbox", "approved")]


async def test_capture_false_authorizes_only(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await post_charge(client, merchant, charge_body(capture=False))
    assert response.status_code == 201
    assert response.json()["status"] == "authorized"
    assert response.json()["amount_captured"] == 0
    assert await sandbox_books(runtime, response.json()["id"]) == [("sandbox", "authorized", 1050, 0)]


@pytest.mark.parametrize(
    ("currency", "amount"), [("JPY", 500), ("kwd", 1234), ("Eur", 1), ("bhd", 9_223_372_036_854_775_807)]
)
async def test_currencies_follow_their_exponent(
    client: httpx.AsyncClient, merchant: MerchantFixture, currency: str, amount: int
) -> None:
    response = await post_charge(client, merchant, charge_body(amount=amount, currency=currency))
    assert response.status_code == 201
    assert response.json()["amount"] == amount
    assert response.json()["currency"] == currency.lower()


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [("tok_chargeDeclined", "card_declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
async def test_a_decline_is_402_with_the_charge(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture, token: str, decline_code: str
) -> None:
    response = await post_charge(client, merchant, charge_body(token))
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["type"] == "card_error"
    assert error["decline_code"] == decline_code
    assert error["request_id"] == response.headers["request-id"]
    charge = (await client.get(f"/v1/charges/{error['charge']}", headers=merchant.headers)).json()
    assert charge["status"] == "failed"
    assert charge["decline_code"] == decline_code


async def test_a_gateway_that_never_processed_is_503(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    response = await post_charge(client, merchant, charge_body("tok_unavailable"))
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "gateway_error"
    charge_id = response.json()["error"]["charge"]
    charge = (await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)).json()
    assert charge["status"] == "failed"
    assert charge["failure_code"] == "gateway_unavailable"


async def test_a_500_after_processing_is_resolved_by_lookup(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await post_charge(client, merchant, charge_body("tok_error"))
    assert response.status_code == 201
    assert response.json()["status"] == "succeeded"
    assert await sandbox_books(runtime, response.json()["id"]) == [("sandbox", "captured", 1050, 1050)]


async def test_get_and_tenant_isolation(runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    created = (await post_charge(client, merchant, charge_body())).json()
    fetched = await client.get(f"/v1/charges/{created['id']}", headers=merchant.headers)
    assert fetched.status_code == 200
    assert fetched.json() == created
    other = await create_merchant(runtime)
    hidden = await client.get(f"/v1/charges/{created['id']}", headers=other.headers)
    assert hidden.status_code == 404
    assert hidden.json()["error"]["code"] == "resource_missing"
    live = await client.get(f"/v1/charges/{created['id']}", headers=merchant.live_headers)
    assert live.status_code == 404
    missing = await client.get("/v1/charges/ch_doesnotexist", headers=merchant.headers)
    assert missing.status_code == 404


async def test_list_is_newest_first_with_cursors(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    ids = [(await post_charge(client, merchant, charge_body(amount=100 + i))).json()["id"] for i in range(7)]
    newest_first = list(reversed(ids))
    page1 = (await client.get("/v1/charges?limit=3", headers=merchant.headers)).json()
    assert [c["id"] for c in page1["data"]] == newest_first[:3]
    assert page1["has_more"] is True
    page2 = (await client.get(f"/v1/charges?limit=3&starting_after={newest_first[2]}", headers=merchant.headers)).json()
    assert [c["id"] for c in page2["data"]] == newest_first[3:6]
    page3 = (await client.get(f"/v1/charges?limit=3&starting_after={newest_first[5]}", headers=merchant.headers)).json()
    assert [c["id"] for c in page3["data"]] == newest_first[6:]
    assert page3["has_more"] is False
    back = (await client.get(f"/v1/charges?limit=3&ending_before={newest_first[3]}", headers=merchant.headers)).json()
    assert [c["id"] for c in back["data"]] == newest_first[:3]
    assert back["has_more"] is False
    other = await create_merchant(runtime)
    assert (await client.get("/v1/charges", headers=other.headers)).json()["data"] == []
    assert (await client.get("/v1/charges", headers=merchant.live_headers)).json()["data"] == []


async def test_every_response_carries_a_request_id(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/healthz"), await client.get("/v1/charges"), await client.get("/nope")):
        assert response.headers["request-id"].startswith("req_")
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_readyz_reports_the_database(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.parametrize(
    ("token", "capture", "status"),
    [("tok_visa", True, 201), ("tok_visa", False, 201), ("tok_chargeDeclined", True, 402), ("tok_error", True, 201)],
)
async def test_the_answer_rendered_before_the_write_is_what_was_stored(
    client: httpx.AsyncClient, merchant: MerchantFixture, token: str, capture: bool, status: int
) -> None:
    """The final reply is rendered from the charge as it will be, then written with it in one
    statement: reading the charge back gives the same object, field for field."""
    created = await post_charge(client, merchant, charge_body(token, capture=capture), key=f"same-{token}-{capture}")
    assert created.status_code == status
    charge = created.json() if status != 402 else created.json()["error"]
    charge_id = charge["id"] if status != 402 else charge["charge"]
    read = await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)
    assert read.status_code == 200
    if status != 402:
        assert read.json() == created.json()
    else:
        assert read.json()["status"] == "failed"
        assert read.json()["decline_code"] == charge["decline_code"]
    replay = await post_charge(client, merchant, charge_body(token, capture=capture), key=f"same-{token}-{capture}")
    assert (replay.status_code, replay.content) == (created.status_code, created.content)
