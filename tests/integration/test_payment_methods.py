"""POST/GET /v1/payment_methods and charges with a `pm_` id, through the real app, the two sandbox
gateways (and their ledger) and the Stripe adapter against the protocol-level Stripe fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from tests.conftest import make_settings
from tests.factories import MerchantFixture, create_merchant, query
from tests.fakes.stripe_server import StripeFake

from payorch.app import create_app
from payorch.gateways.sandbox.config import SandboxConfig
from payorch.gateways.stripe.config import StripeConfig
from payorch.runtime import Runtime


@pytest.fixture
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


async def rows(runtime: Runtime, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in await query(runtime.db, sql, **params)]


def assert_error(response: httpx.Response, status: int, code: str, error_type: str = "invalid_request_error") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (error_type, code)
    assert error["message"]
    assert error["request_id"] == response.headers["request-id"]


async def vault(
    client: httpx.AsyncClient, merchant: MerchantFixture, tokens: dict[str, str], key: str | None = None
) -> httpx.Response:
    headers = dict(merchant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/v1/payment_methods", json={"tokens": tokens}, headers=headers)


async def test_vault_then_charge_with_the_pm_id(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await vault(client, merchant, {"sandbox": "tok_mastercard", "sandbox_backup": "tok_mastercard"})

    assert response.status_code == 201, response.text
    payment_method = response.json()
    assert payment_method["id"].startswith("pm_")
    assert payment_method["object"] == "payment_method"
    assert payment_method["gateways"] == ["sandbox", "sandbox_backup"]
    assert payment_method["card"] == {
        "brand": "mastercard", "last4": "4444", "exp_month": 12, "exp_year": 2034, "bin": "555555", "country": "US"
    }  # fmt: skip
    assert "tok_" not in response.text  # no token ever leaves
    assert "sbxpm_" not in response.text
    [(tokens,)] = await rows(
        runtime,
        "SELECT tokens FROM payment_methods WHERE merchant_id = :m AND id = :p",
        m=merchant.id,
        p=payment_method["id"],
    )
    assert set(tokens) == {"sandbox", "sandbox_backup"}
    assert all(token.startswith("sbxpm_") for token in tokens.values())
    fetched = await client.get(f"/v1/payment_methods/{payment_method['id']}", headers=merchant.headers)
    assert fetched.json() == payment_method

    charge = await client.post(
        "/v1/charges",
        json={"amount": 700, "currency": "eur", "payment_method": payment_method["id"]},
        headers=merchant.headers,
    )

    assert charge.status_code == 201, charge.text
    assert (charge.json()["status"], charge.json()["payment_method"]) == ("succeeded", payment_method["id"])
    assert charge.json()["card"]["last4"] == "4444"
    assert await rows(
        runtime,
        "SELECT gateway, token, amount_captured FROM sandbox_payments WHERE charge_id = :c",
        c=charge.json()["id"],
    ) == [("sandbox", tokens["sandbox"], 700)]
    [(action, outcome)] = await rows(
        runtime,
        "SELECT payload->>'action', payload->>'outcome' FROM audit_outbox WHERE payload->'resource'->>'id' = :p",
        p=payment_method["id"],
    )
    assert (action, outcome) == ("payment_method.vaulted", "success")


async def test_a_pm_is_eligible_on_every_gateway_that_vaulted_it(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    # The primary takes the vaulted token but then cannot process it (not sent): failover to the backup.
    payment_method = (
        await vault(client, merchant, {"sandbox": "tok_unavailable", "sandbox_backup": "tok_visa"})
    ).json()

    charge = await client.post(
        "/v1/charges",
        json={"amount": 500, "currency": "usd", "payment_method": payment_method["id"]},
        headers=merchant.headers,
    )

    assert charge.status_code == 201, charge.text
    assert (charge.json()["gateway"], charge.json()["status"]) == ("sandbox_backup", "succeeded")
    assert await rows(
        runtime, "SELECT gateway, amount_captured FROM sandbox_payments WHERE charge_id = :c", c=charge.json()["id"]
    ) == [("sandbox_backup", 500)]


async def test_partial_vault_keeps_the_gateways_that_vaulted(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await vault(client, merchant, {"sandbox": "tok_bogus", "sandbox_backup": "tok_amex"})

    assert response.status_code == 201, response.text
    assert response.json()["gateways"] == ["sandbox_backup"]
    assert response.json()["card"]["brand"] == "amex"
    [(details,)] = await rows(
        runtime,
        "SELECT payload->'details' FROM audit_outbox WHERE payload->'resource'->>'id' = :p",
        p=response.json()["id"],
    )
    assert details == {"gateways": ["sandbox_backup"], "not_vaulted": {"sandbox": "invalid_token"}}


async def test_nothing_vaulted_is_400_and_stores_nothing(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    response = await vault(client, merchant, {"sandbox": "tok_bogus", "sandbox_backup": "nonce_bogus"})

    assert_error(response, 400, "token_rejected")
    assert response.json()["error"]["param"] == "tokens.sandbox"
    assert await rows(runtime, "SELECT id FROM payment_methods WHERE merchant_id = :m", m=merchant.id) == []


async def test_idempotent_vault_replays(runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    first = await vault(client, merchant, {"sandbox": "tok_visa"}, key="pm-key")
    again = await vault(client, merchant, {"sandbox": "tok_visa"}, key="pm-key")

    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert len(await rows(runtime, "SELECT id FROM payment_methods WHERE merchant_id = :m", m=merchant.id)) == 1


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"tokens": {"stripe": "tok_visa"}}, "gateway_not_configured", "tokens.stripe"),
        ({"tokens": {}}, "parameter_invalid", "tokens"),
        ({}, "parameter_missing", "tokens"),
        ({"tokens": {"sandbox": ""}}, "parameter_invalid", "tokens.sandbox"),
        ({"tokens": {"sandbox": 42}}, "parameter_invalid", "tokens.sandbox"),
        ({"tokens": {"sandbox": "tok_visa"}, "customer": "cus_1"}, "parameter_unknown", "customer"),
    ],
)
async def test_bad_payment_method_bodies(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture, body: Any, code: str, param: str
) -> None:
    response = await client.post("/v1/payment_methods", json=body, headers=merchant.headers)

    assert_error(response, 400, code)
    assert response.json()["error"]["param"] == param
    assert await rows(runtime, "SELECT id FROM payment_methods WHERE merchant_id = :m", m=merchant.id) == []


async def test_another_merchants_or_modes_pm_cannot_be_used(
    runtime: Runtime, client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    payment_method = (await vault(client, merchant, {"sandbox": "tok_visa"})).json()
    other = await create_merchant(runtime)

    for headers in (other.headers, merchant.live_headers):
        charge = await client.post(
            "/v1/charges",
            json={"amount": 500, "currency": "usd", "payment_method": payment_method["id"]},
            headers=headers,
        )
        assert_error(charge, 400, "resource_missing")
        assert charge.json()["error"]["param"] == "payment_method"
        fetched = await client.get(f"/v1/payment_methods/{payment_method['id']}", headers=headers)
        assert_error(fetched, 404, "resource_missing")
    assert await rows(runtime, "SELECT id FROM charges WHERE merchant_id = :m", m=other.id) == []


# -- a real adapter: Stripe Elements token vaulted through the Stripe SDK against the fake ----------


@pytest.fixture
async def stripe_app(database_url: str, stripe_fake: StripeFake) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(
        database_url,
        # Faults injected by one test must not open the breaker for the next: not what these test.
        breaker={"enabled": False},
        gateways=[
            SandboxConfig(name="sandbox"),
            StripeConfig(
                name="stripe",
                base_url=stripe_fake.url,
                api_key=SecretStr("sk_test_fake"),
                timeout_ms=800,
            ),
        ],
    )
    built = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=built))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield built, http
    await built.aclose()


async def test_a_stripe_token_vaults_and_the_backup_charges_it(
    stripe_app: tuple[Runtime, httpx.AsyncClient], stripe_fake: StripeFake
) -> None:
    built, http = stripe_app
    merchant = await create_merchant(built)
    response = await vault(http, merchant, {"sandbox": "tok_unavailable", "stripe": "tok_visa"})
    assert response.status_code == 201, response.text
    assert response.json()["gateways"] == ["sandbox", "stripe"]

    charge = await http.post(
        "/v1/charges",
        json={"amount": 1234, "currency": "usd", "payment_method": response.json()["id"]},
        headers=merchant.headers,
    )

    assert charge.status_code == 201, charge.text
    assert (charge.json()["gateway"], charge.json()["status"]) == ("stripe", "succeeded")
    [ledger] = [c for c in stripe_fake.ledger if c.reference == charge.json()["gateway_reference"]]
    assert (ledger.amount_captured, ledger.token.startswith("pm_")) == (1234, True)
