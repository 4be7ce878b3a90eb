"""Per-merchant gateway accounts (docs/routing.md) on the real Postgres and the gateway fakes:
credentials validated, sealed and never shown; charges routed to a merchant's own accounts and
their follow-ups sent there; disabling and deleting; isolation between merchants; per-account
notifications and breakers; the master key's rotation (local key and KMS on moto)."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import stripe
from tests.conftest import own_app
from tests.factories import MerchantFixture, audit_payloads_naming, create_merchant, query
from tests.fakes.stripe_server import Fault, StripeFake
from tests.integration.accounts_support import (
    allowed,
    charge,
    connect,
    credentials,
    kms_key,
    kms_settings,
    moto_kms,
    token_for,
)
from tests.integration.orchestration_support import Fakes, running_fakes

from payorch.runtime import Runtime


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(scope="module")
async def app(database_url: str, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    data_dir = str(tmp_path_factory.mktemp("accounts-data"))
    breaker = {"minimum_calls": 2, "failure_rate": 1.0, "open_seconds": 600, "window_seconds": 600}
    async with own_app(database_url, data_dir=data_dir, accounts=allowed(fakes), breaker=breaker) as built:
        yield built


@pytest.mark.parametrize("kind", ["stripe", "braintree", "adyen"])
async def test_two_accounts_of_a_gateway_route_by_priority_and_follow_ups_reach_the_account(
    app: tuple[Runtime, httpx.AsyncClient], fakes: Fakes, kind: str
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    first = await connect(client, merchant, kind, "main", credentials=credentials(fakes, kind))
    second = await connect(client, merchant, kind, "backup", credentials=credentials(fakes, kind))
    assert first["credentials"]["fingerprint"].startswith("fp_")
    rules = {"default": {"strategy": "priority", "accounts": [second["id"], first["id"]]}}
    put = await client.put("/v1/routing", json=rules, headers=merchant.headers)
    assert put.status_code == 200, put.text
    assert put.json()["current"]["version"] == 1

    created = await charge(client, merchant, {"main": token_for(kind), "backup": token_for(kind)}, capture=False)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["gateway"] == second["id"]
    assert body["routing"]["candidates"] == [second["id"], first["id"]]
    assert body["routing"]["version"] == 1
    # The follow-ups go to the account that holds the money.
    captured = await client.post(f"/v1/charges/{body['id']}/capture", json={}, headers=merchant.headers)
    assert captured.status_code == 200, captured.text
    refund = await client.post("/v1/refunds", json={"charge": body["id"]}, headers=merchant.headers)
    if kind == "braintree":  # its answer, from the account: an unsettled sale cannot be refunded (91506)
        assert refund.status_code == 402, refund.text
        assert "91506" in refund.json()["error"]["message"]
    else:
        assert refund.status_code == 201, refund.text
        assert refund.json()["status"] == "succeeded"


async def test_credentials_are_validated_by_the_gateways_own_model(
    app: tuple[Runtime, httpx.AsyncClient], fakes: Fakes
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    post = client.post
    missing = await post("/v1/gateway_accounts", json={"gateway": "stripe", "name": "s", "credentials": {}},
                         headers=merchant.headers)  # fmt: skip
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "credentials.api_key"
    unknown_field = await post(
        "/v1/gateway_accounts",
        json={"gateway": "stripe", "name": "s", "credentials": {"api_key": "sk_test_x", "colour": "red"}},
        headers=merchant.headers,
    )
    assert unknown_field.status_code == 400
    assert unknown_field.json()["error"]["param"] == "credentials.colour"
    host = await post(
        "/v1/gateway_accounts",
        json={"gateway": "stripe", "name": "s", "credentials": {"api_key": "sk_test_x", "base_url": "http://10.0.0.1"}},
        headers=merchant.headers,
    )
    assert host.status_code == 400
    assert host.json()["error"]["param"] == "credentials.base_url"
    kind = await post("/v1/gateway_accounts", json={"gateway": "paypal", "name": "p"}, headers=merchant.headers)
    assert kind.status_code == 400
    assert kind.json()["error"]["code"] == "gateway_unknown"
    refused = await post(
        "/v1/gateway_accounts",
        json={"gateway": "stripe", "name": "s", "verify": True,
              "credentials": {"api_key": "sk_test_wrong", "base_url": fakes.stripe.url}},
        headers=merchant.headers,
    )  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "credentials_refused"
    verified = await connect(client, merchant, "stripe", "s", verify=True, credentials=credentials(fakes, "stripe"))
    assert verified["credentials"]["last4"] == fakes.stripe.api_key[-4:]
    taken = await post("/v1/gateway_accounts", json={"gateway": "sandbox", "name": "s"}, headers=merchant.headers)
    assert taken.status_code == 409
    assert taken.json()["error"]["code"] == "account_name_taken"


async def test_a_disabled_account_takes_no_new_charge_but_finishes_its_own(
    app: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    account = await connect(client, merchant, "sandbox", "own")
    authorized = await charge(client, merchant, {"own": "tok_visa"}, capture=False)
    assert authorized.status_code == 201, authorized.text
    assert authorized.json()["gateway"] == account["id"]
    busy = await client.delete(f"/v1/gateway_accounts/{account['id']}", headers=merchant.headers)
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "account_in_use"

    disabled = await client.post(
        f"/v1/gateway_accounts/{account['id']}", json={"enabled": False}, headers=merchant.headers
    )
    assert disabled.status_code == 200
    assert disabled.json()["enabled"] is False
    refused = await charge(client, merchant, {"own": "tok_visa"})
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "no_eligible_gateway"
    evaluated = await client.post(
        "/v1/routing/evaluate",
        json={"amount": 1200, "currency": "usd", "payment_method": {"tokens": {"own": "tok_visa"}}},
        headers=merchant.headers,
    )
    assert evaluated.json()["skipped"][account["id"]] == "disabled"
    charge_id = authorized.json()["id"]
    canceled = await client.post(f"/v1/charges/{charge_id}/cancel", headers=merchant.headers)
    assert canceled.status_code == 200, canceled.text
    deleted = await client.delete(f"/v1/gateway_accounts/{account['id']}", headers=merchant.headers)
    assert deleted.status_code == 200, deleted.text
    gone = await client.get(f"/v1/gateway_accounts/{account['id']}", headers=merchant.headers)
    assert gone.status_code == 404


async def test_another_merchants_account_is_never_routed_to(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    owner, stranger = await create_merchant(runtime), await create_merchant(runtime)
    account = await connect(client, owner, "sandbox", "private_sbx")
    rules = {"default": {"strategy": "priority", "accounts": [account["id"]]}}
    foreign = await client.put("/v1/routing", json=rules, headers=stranger.headers)
    assert foreign.status_code == 400
    assert foreign.json()["error"]["param"] == "default.accounts[0]"
    named = await charge(client, stranger, {"private_sbx": "tok_visa"})
    assert named.status_code == 400
    assert named.json()["error"]["code"] == "gateway_not_configured"
    # A stranger with an account of the same name gets its own, never the owner's.
    own = await connect(client, stranger, "sandbox", "private_sbx")
    created = await charge(client, stranger, {"private_sbx": "tok_visa"})
    assert created.json()["gateway"] == own["id"]
    listed = await client.get("/v1/gateway_accounts", headers=stranger.headers)
    assert [a["id"] for a in listed.json()["data"]] == [own["id"]]
    assert (await client.get("/v1/routing", headers=stranger.headers)).json()["current"] is None


async def test_evaluate_agrees_with_the_charge_and_the_decision_is_on_record(
    app: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    cheap = await connect(client, merchant, "sandbox", "cheap", fees={"eur": {"percent_bps": 100, "fixed": 10}})
    dear = await connect(client, merchant, "sandbox", "dear", fees={"eur": {"percent_bps": 290, "fixed": 30}})
    rules = {
        "rules": [
            {"name": "big_visa", "conditions": {"currency": ["eur"], "amount": {"gte": 1000}, "card_network": ["visa"]},
             "action": {"strategy": "least_cost", "accounts": [dear["id"], cheap["id"]]}},
            {"name": "vip", "conditions": {"metadata": {"tier": "vip"}},
             "action": {"strategy": "priority", "accounts": [dear["id"]]}},
        ],
        "default": {"strategy": "priority", "accounts": [dear["id"], cheap["id"], "sandbox"]},
    }  # fmt: skip
    assert (await client.put("/v1/routing", json=rules, headers=merchant.headers)).status_code == 200
    tokens = {"cheap": "tok_visa", "dear": "tok_visa"}
    cases = [
        ({"amount": 5000, "currency": "eur", "card": {"network": "visa"}}, "big_visa", [cheap["id"], dear["id"]]),
        ({"amount": 5000, "currency": "eur", "metadata": {"tier": "vip"}}, "vip", [dear["id"]]),
        ({"amount": 500, "currency": "eur"}, None, [dear["id"], cheap["id"]]),
    ]
    for params, rule, order in cases:
        card = params.pop("card", None)
        payment_method = {"tokens": tokens, **({"card": card} if card else {})}
        evaluated = await client.post(
            "/v1/routing/evaluate", json={**params, "payment_method": payment_method}, headers=merchant.headers
        )
        assert evaluated.status_code == 200, evaluated.text
        dry = evaluated.json()
        assert (dry["rule"], dry["candidates"]) == (rule, order)
        created = await client.post(
            "/v1/charges", json={**params, "payment_method": payment_method}, headers=merchant.headers
        )
        assert created.status_code == 201, created.text
        decision = created.json()["routing"]
        assert {k: decision[k] for k in ("rule", "strategy", "candidates", "skipped")} == {
            k: dry[k] for k in ("rule", "strategy", "candidates", "skipped")
        }
        assert created.json()["gateway"] == order[0]
        fetched = await client.get(f"/v1/charges/{created.json()['id']}", headers=merchant.headers)
        assert fetched.json()["routing"] == decision
        (audited,) = [
            p for p in await audit_payloads_naming(runtime, created.json()["id"]) if p["action"] == "charge.created"
        ]
        assert audited["details"]["routing"]["candidates"] == order
    assert dry["skipped"]["sandbox"] == "no_token"
    invalid = {"default": {"strategy": "volume_split", "splits": [{"account": cheap["id"], "weight": 60},
                                                                 {"account": dear["id"], "weight": 30}]}}  # fmt: skip
    refused = await client.put("/v1/routing", json=invalid, headers=merchant.headers)
    assert refused.status_code == 400
    assert "90" in refused.json()["error"]["message"]
    history = (await client.get("/v1/routing", headers=merchant.headers)).json()
    assert history["current"]["version"] == 1
    assert history["history"] == []


async def test_one_merchants_refused_key_opens_only_its_own_accounts_breaker(
    app: tuple[Runtime, httpx.AsyncClient], fakes: Fakes
) -> None:
    runtime, client = app
    broken, healthy = await create_merchant(runtime), await create_merchant(runtime)
    bad = {**credentials(fakes, "stripe"), "api_key": "sk_test_revoked"}
    broken_account = await connect(client, broken, "stripe", "stripe_eu", credentials=bad)
    healthy_account = await connect(client, healthy, "stripe", "stripe_eu", credentials=credentials(fakes, "stripe"))
    for _ in range(2):
        refused = await charge(client, broken, {"stripe_eu": "tok_visa"})
        assert refused.status_code == 503, refused.text
    assert runtime.breakers.state(broken_account["id"]) == "open"
    for _ in range(3):
        ok = await charge(client, healthy, {"stripe_eu": "tok_visa"})
        assert ok.status_code == 201, ok.text
    assert runtime.breakers.state(healthy_account["id"]) == "closed"
    turned_away = await charge(client, broken, {"stripe_eu": "tok_visa"})
    assert turned_away.json()["error"]["type"] == "gateway_error"


WEBHOOK_SECRET = "whsec_merchant_own_secret_0123"


def signed(event: dict[str, Any], secret: str) -> dict[str, Any]:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, int(time.time()))
    return {"content": payload.encode(), "headers": {"Stripe-Signature": header, "Content-Type": "application/json"}}


async def test_an_accounts_notifications_are_verified_with_its_own_secret(
    app: tuple[Runtime, httpx.AsyncClient], fakes: Fakes
) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    own = {**credentials(fakes, "stripe"), "webhook_secret": WEBHOOK_SECRET}
    account = await connect(client, merchant, "stripe", "stripe_own", credentials=own)
    assert account["webhook_path"] == f"/v1/gateway_webhooks/{account['id']}"
    fakes.stripe.inject(Fault.HANG, times=100)
    try:
        pending = await charge(client, merchant, {"stripe_own": "tok_visa"})
    finally:
        fakes.stripe.clear_faults()
        fakes.stripe.release()
    assert pending.status_code == 202, pending.text
    (attempt,) = await query(runtime.db, "SELECT id FROM charge_attempts WHERE merchant_id = :m", m=merchant.id)
    event = {
        "id": f"evt_{secrets.token_hex(6)}", "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_own_1", "object": "payment_intent", "amount_received": 1200,
                            "status": "succeeded", "metadata": {"attempt_id": attempt["id"]}}},
    }  # fmt: skip
    wrong = await client.post(account["webhook_path"], **signed(event, "whsec_someone_else"))
    assert wrong.status_code == 400
    applied = await client.post(account["webhook_path"], **signed(event, WEBHOOK_SECRET))
    assert applied.status_code == 200, applied.text
    assert applied.json()["outcome"] == "applied"
    settled = await client.get(f"/v1/charges/{pending.json()['id']}", headers=merchant.headers)
    assert settled.json()["status"] == "succeeded"
    unknown = await client.post("/v1/gateway_webhooks/ga_01nosuchaccount0000000000", **signed(event, WEBHOOK_SECRET))
    assert unknown.status_code == 404


async def test_no_credential_appears_in_an_answer_log_row_or_audit_event(
    database_url: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    api_key, hook = f"sk_test_{secrets.token_hex(16)}", f"whsec_{secrets.token_hex(16)}"
    caplog.set_level(logging.DEBUG)
    with StripeFake(api_key=api_key) as fake:
        settings = {"data_dir": str(tmp_path), "accounts": {"allowed_base_urls": [fake.url]}}
        async with own_app(database_url, **settings) as (runtime, client):
            merchant = await create_merchant(runtime)
            creds = {"api_key": api_key, "base_url": fake.url, "webhook_secret": hook}
            account = await connect(client, merchant, "stripe", "leak_hunt", credentials=creds, verify=True)
            texts = [json.dumps(account)]
            charged = await charge(client, merchant, {"leak_hunt": "tok_visa"})
            texts.append(charged.text)
            updated = await client.post(
                f"/v1/gateway_accounts/{account['id']}", json={"credentials": {**creds, "colour": 1}},
                headers=merchant.headers,
            )  # fmt: skip
            texts += [updated.text, (await client.get("/v1/gateway_accounts", headers=merchant.headers)).text]
            texts.append((await client.get(f"/v1/gateway_accounts/{account['id']}", headers=merchant.headers)).text)
            rows = await query(runtime.db, "SELECT * FROM gateway_accounts WHERE merchant_id = :m", m=merchant.id)
            texts += [repr(dict(row)) for row in rows]
            texts += [bytes(rows[0]["sealed_credentials"]).decode("latin-1"), bytes(rows[0]["wrapped_key"]).hex()]
            texts += [json.dumps(p) for p in await audit_payloads_naming(runtime, account["id"])]
            texts += [json.dumps(p) for p in await audit_payloads_naming(runtime, merchant.id)]
    texts += [record.getMessage() for record in caplog.records]
    assert charged.status_code == 201, charged.text
    haystack = "\n".join(texts)
    for secret in (api_key, hook, api_key[8:], hook[6:]):
        assert secret not in haystack
    assert account["credentials"]["last4"] == api_key[-4:]


@pytest.fixture(scope="module")
def kms_url() -> Iterator[str]:
    with moto_kms() as url:
        yield url


async def wrap_keys(runtime: Runtime, merchant: MerchantFixture) -> set[str]:
    rows = await query(runtime.db, "SELECT wrap_key_id FROM gateway_accounts WHERE merchant_id = :m", m=merchant.id)
    return {row["wrap_key_id"] for row in rows}


async def test_kms_rotation_rewraps_every_data_key_while_charges_go_on(
    database_url: str, kms_url: str, tmp_path: Any
) -> None:
    old, new = kms_key(kms_url), kms_key(kms_url)
    async with own_app(database_url, data_dir=str(tmp_path), accounts=kms_settings(kms_url, old)) as (runtime, client):
        merchant = await create_merchant(runtime)
        accounts = [await connect(client, merchant, "sandbox", f"kms_{n}") for n in range(3)]
        assert await wrap_keys(runtime, merchant) == {old}
    # Every process now wraps with the new key; rows wrapped by the old one stay readable meanwhile.
    async with own_app(database_url, data_dir=str(tmp_path), accounts=kms_settings(kms_url, new)) as (runtime, client):
        before = await charge(client, merchant, {"kms_0": "tok_visa"})
        assert before.status_code == 201, before.text
        assert await runtime.accounts.rotate() >= 3
        assert await wrap_keys(runtime, merchant) == {new}
        runtime.directory.invalidate(merchant.id)
        for account in accounts:
            runtime.directory.forget(account["id"])
        after = await charge(client, merchant, {"kms_1": "tok_visa"})
        assert after.status_code == 201, after.text
        assert after.json()["gateway"] == accounts[1]["id"]
        events = await audit_payloads_naming(runtime, accounts[2]["id"])
        assert "gateway_account.key_rewrapped" in {e["action"] for e in events}


async def test_local_key_rotation_keeps_old_rows_readable_until_rewrapped(database_url: str, tmp_path: Any) -> None:
    async with own_app(database_url, data_dir=str(tmp_path)) as (runtime, client):
        merchant = await create_merchant(runtime)
        account = await connect(client, merchant, "sandbox", "local_rot")
        (old,) = await wrap_keys(runtime, merchant)
        wrapper = runtime.directory.wrapper
        new = wrapper.new_key()  # type: ignore[attr-defined]
        assert new != old
        key_file = tmp_path / "account_keys" / f"{new.removeprefix('local:')}.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        runtime.directory.forget(account["id"])
        assert (await charge(client, merchant, {"local_rot": "tok_visa"})).status_code == 201
        assert await runtime.accounts.rotate() >= 1
        assert await wrap_keys(runtime, merchant) == {new}
        runtime.directory.forget(account["id"])
        runtime.directory.invalidate(merchant.id)
        assert (await charge(client, merchant, {"local_rot": "tok_visa"})).status_code == 201
