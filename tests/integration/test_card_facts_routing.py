"""Card facts of vaulted payment methods (docs/routing.md): each gateway's fake tells the card's BIN
and issuing country when it vaults it, the ``pm_`` keeps them, and ``bin_prefix`` and
``issuing_country`` rules match charges made with the ``pm_`` id, in the dry run and in the charge
alike. No more of a card number than a BIN is ever kept, and nothing payorch writes of it reads as
a card number."""

from __future__ import annotations

import json
import logging
from typing import Any

import asyncpg
import httpx
import pytest
from tests.factories import MerchantFixture, audit_payloads_naming, create_merchant, query
from tests.fakes.adyen_server import encrypted_card
from tests.integration.accounts_support import connect, credentials
from tests.integration.orchestration_support import Fakes

from payorch.runtime import Runtime
from payorch.security.pan import contains_pan

NETHERLANDS_VISA = json.dumps(json.loads(encrypted_card("J.Smith", number_hint="9")), separators=(",", ":"))

# What each gateway's fake tells of the card it vaults: (token, BIN, issuing country).
VAULTED = {
    "stripe": ("tok_fr", None, "FR"),  # Stripe tells no BIN
    "braintree": ("fake-valid-country-of-issuance-cad-nonce", "400000", "CA"),  # country_of_issuance CAN
    "adyen": (NETHERLANDS_VISA, "454617", "NL"),
    "sandbox": ("tok_br", "400000", "BR"),
}


async def vault(client: httpx.AsyncClient, merchant: MerchantFixture, tokens: dict[str, str]) -> dict[str, Any]:
    answer = await client.post("/v1/payment_methods", json={"tokens": tokens}, headers=merchant.headers)
    assert answer.status_code == 201, answer.text
    payment_method: dict[str, Any] = answer.json()
    return payment_method


async def stored_facts(runtime: Runtime, payment_method_id: str) -> tuple[str | None, str | None]:
    sql = "SELECT card_bin, card_country FROM payment_methods WHERE id = :id"
    (row,) = await query(runtime.db, sql, id=payment_method_id)
    return row["card_bin"], row["card_country"]


@pytest.mark.parametrize("kind", sorted(VAULTED))
async def test_bin_and_country_rules_match_a_charge_on_the_vaulted_pm(
    accounts_app: tuple[Runtime, httpx.AsyncClient], gateway_fakes: Fakes, kind: str
) -> None:
    runtime, client = accounts_app
    token, first_digits, country = VAULTED[kind]
    merchant = await create_merchant(runtime)
    account = await connect(client, merchant, kind, "card_account", credentials=credentials(gateway_fakes, kind))
    other = await connect(client, merchant, "sandbox", "other")
    payment_method = await vault(client, merchant, {"card_account": token})
    assert (payment_method["card"]["bin"], payment_method["card"]["country"]) == (first_digits, country)
    assert await stored_facts(runtime, payment_method["id"]) == (first_digits, country)
    fetched = await client.get(f"/v1/payment_methods/{payment_method['id']}", headers=merchant.headers)
    assert fetched.json()["card"] == payment_method["card"]

    rules = {
        "rules": [
            {"name": "japan", "conditions": {"issuing_country": ["JP"]},
             "action": {"strategy": "priority", "accounts": [other["id"]]}},
            {"name": "by_bin", "conditions": {"bin_prefix": ["4000", "4546"]},
             "action": {"strategy": "priority", "accounts": [account["id"], other["id"]]}},
            {"name": "by_country", "conditions": {"issuing_country": [country]},
             "action": {"strategy": "priority", "accounts": [account["id"]]}},
        ],
        "default": {"strategy": "priority", "accounts": [other["id"]]},
    }  # fmt: skip
    assert (await client.put("/v1/routing", json=rules, headers=merchant.headers)).status_code == 200
    # A fact the gateway did not tell never matches: Stripe's pm_ passes over the BIN rule.
    expected_rule = "by_bin" if first_digits is not None else "by_country"
    body = {"amount": 2500, "currency": "eur", "payment_method": payment_method["id"]}
    dry = await client.post("/v1/routing/evaluate", json=body, headers=merchant.headers)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["rule"], dry.json()["candidates"][0]) == (expected_rule, account["id"])
    charged = await client.post("/v1/charges", json=body, headers=merchant.headers)
    assert charged.status_code == 201, charged.text
    assert charged.json()["routing"]["rule"] == expected_rule
    assert charged.json()["gateway"] == account["id"]


async def test_a_card_vaulted_at_several_gateways_takes_each_fact_from_the_first_that_told_it(
    accounts_app: tuple[Runtime, httpx.AsyncClient], gateway_fakes: Fakes
) -> None:
    runtime, client = accounts_app
    merchant = await create_merchant(runtime)
    await connect(client, merchant, "stripe", "stripe_eu", credentials=credentials(gateway_fakes, "stripe"))
    await connect(client, merchant, "braintree", "braintree_eu", credentials=credentials(gateway_fakes, "braintree"))
    payment_method = await vault(
        client, merchant, {"stripe_eu": "tok_fr", "braintree_eu": "fake-valid-country-of-issuance-cad-nonce"}
    )
    assert payment_method["gateways"][:2] == ["stripe_eu", "braintree_eu"]
    # Stripe (first) tells the country; only Braintree tells the BIN.
    assert (payment_method["card"]["country"], payment_method["card"]["bin"]) == ("FR", "400000")
    unknown = await vault(client, merchant, {"braintree_eu": "fake-valid-unknown-indicators-nonce"})
    assert (unknown["card"]["bin"], unknown["card"]["country"]) == ("400000", None)


async def test_nothing_written_of_a_vaulted_card_reads_as_a_card_number(
    accounts_app: tuple[Runtime, httpx.AsyncClient], caplog: pytest.LogCaptureFixture
) -> None:
    runtime, client = accounts_app
    caplog.set_level(logging.DEBUG)
    merchant = await create_merchant(runtime)
    # The sandbox's tok_visa is 4242 4242 4242 4242: its 8-digit BIN and last four are 12 of those digits.
    payment_method = await vault(client, merchant, {"sandbox": "tok_visa"})
    assert (payment_method["card"]["bin"], payment_method["card"]["last4"]) == ("42424242", "4242")
    charged = await client.post(
        "/v1/charges",
        json={"amount": 1000, "currency": "usd", "payment_method": payment_method["id"]},
        headers=merchant.headers,
    )
    assert charged.status_code == 201, charged.text
    hinted = await client.post(
        "/v1/routing/evaluate",
        json={"amount": 1000, "currency": "usd",
              "payment_method": {"tokens": {"sandbox": "tok_visa"}, "card": {"bin": "42424242", "country": "US"}}},
        headers=merchant.headers,
    )  # fmt: skip
    assert hinted.status_code == 200, hinted.text  # the request guard takes a BIN for what it is
    texts = [json.dumps(payment_method), charged.text, hinted.text]
    texts += [(await client.get(f"/v1/payment_methods/{payment_method['id']}", headers=merchant.headers)).text]
    for needle in (payment_method["id"], charged.json()["id"]):
        texts += [json.dumps(payload) for payload in await audit_payloads_naming(runtime, needle)]
    rows = await query(runtime.db, "SELECT * FROM payment_methods WHERE id = :id", id=payment_method["id"])
    texts += [repr(dict(row)) for row in rows]
    texts += [record.getMessage() for record in caplog.records]
    assert len(texts) > 6
    for text in texts:
        assert not contains_pan(text), text
        assert "4242424242424242" not in text


@pytest.mark.parametrize(
    ("column", "value"),
    [("card_bin", "4242424242424242"), ("card_bin", "424242424"), ("card_bin", "4242"), ("card_country", "USA"),
     ("card_country", "us")],
)  # fmt: skip
async def test_the_table_refuses_more_than_a_bin_or_a_country_code(
    accounts_app: tuple[Runtime, httpx.AsyncClient], column: str, value: str
) -> None:
    runtime, client = accounts_app
    merchant = await create_merchant(runtime)
    payment_method = await vault(client, merchant, {"sandbox": "tok_mastercard"})
    with pytest.raises(asyncpg.CheckViolationError):
        await query(
            runtime.db,
            f"UPDATE payment_methods SET {column} = :value WHERE merchant_id = :m AND id = :id",  # noqa: S608 - a column name from the test's own list
            value=value,
            m=merchant.id,
            id=payment_method["id"],
        )
    assert await stored_facts(runtime, payment_method["id"]) == ("555555", "US")
