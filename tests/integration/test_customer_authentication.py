"""Customer authentication (3-D Secure) through the API with the sandbox's own flow: frictionless,
a challenge passed and failed at the page payorch serves, confirm replayed, an off-session charge the
issuer wants authenticated, binding to the account, expiry, the SCA retry and stored credentials."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query

from payorch.payments import charges as lifecycle
from payorch.runtime import Runtime
from payorch.storage import charges as repo

RETURN_URL = "https://shop.example/checkout/done?order=42"


async def _waiting(client: httpx.AsyncClient, merchant: MerchantFixture, **extra: Any) -> dict[str, Any]:
    body = charge_body("tok_threeDSecureRequired", return_url=RETURN_URL, **extra)
    response = await post_charge(client, merchant, body)
    assert response.status_code == 202, response.text
    charge: dict[str, Any] = response.json()
    assert charge["status"] == "requires_action"
    return charge


def _page_path(charge: dict[str, Any]) -> str:
    url = charge["next_action"]["redirect_to_url"]["url"]
    return urlsplit(url).path


async def _customer_answers(client: httpx.AsyncClient, charge: dict[str, Any], button: str) -> httpx.Response:
    """What the customer's browser does on the page: load it, press a button, follow the 303."""
    page = await client.get(_page_path(charge))
    assert page.status_code == 200
    assert "Complete authentication" in page.text
    assert "Fail authentication" in page.text
    action = re.search(rf'action="([^"]+/{button})"', page.text)
    assert action is not None
    return await client.post(action.group(1))


async def _events(runtime: Runtime, charge_id: str) -> list[str]:
    rows = await query(
        runtime.db, "SELECT type FROM events WHERE resource_id = :id ORDER BY created_at, id", id=charge_id
    )
    return [row["type"] for row in rows]


async def _confirm(client: httpx.AsyncClient, merchant: MerchantFixture, charge_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/v1/charges/{charge_id}/confirm", json=body, headers=merchant.headers)


async def test_a_frictionless_authentication_succeeds_at_once(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)

    response = await post_charge(client, merchant, charge_body("tok_threeDSecureOptional", return_url=RETURN_URL))

    assert response.status_code == 201, response.text
    charge = response.json()
    assert charge["status"] == "succeeded"
    assert charge["next_action"] is None
    assert charge["authentication"] == {"status": "succeeded", "version": "2.2.0", "liability_shifted": True}


async def test_a_challenge_passed_at_the_page_succeeds_on_confirm(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)
    action = charge["next_action"]
    assert action["type"] == "redirect_to_url"
    assert action["redirect_to_url"]["return_url"] == RETURN_URL
    assert "/sandbox/authenticate/" in action["redirect_to_url"]["url"]
    assert charge["authentication"]["status"] == "required"
    assert charge["gateway"] == "sandbox"

    back = await _customer_answers(client, charge, "complete")
    confirmed = await _confirm(client, merchant, charge["id"])

    assert back.status_code == 303
    target = urlsplit(back.headers["location"])
    assert target.netloc == "shop.example"
    assert target.path == "/checkout/done"
    assert parse_qs(target.query) == {"order": ["42"], "charge": [charge["id"]], "authentication": ["succeeded"]}
    assert confirmed.status_code == 200, confirmed.text
    done = confirmed.json()
    assert done["status"] == "succeeded"
    assert done["amount_captured"] == done["amount"]
    assert done["next_action"] is None
    assert done["authentication"] == {"status": "succeeded", "version": "2.2.0", "liability_shifted": True}
    assert await _events(runtime, charge["id"]) == ["charge.requires_action", "charge.succeeded"]


async def test_a_challenge_failed_at_the_page_fails_the_charge(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)

    back = await _customer_answers(client, charge, "fail")
    confirmed = await _confirm(client, merchant, charge["id"])

    assert parse_qs(urlsplit(back.headers["location"]).query)["authentication"] == ["failed"]
    assert confirmed.status_code == 402, confirmed.text
    error = confirmed.json()["error"]
    assert (error["type"], error["decline_code"], error["charge"]) == (
        "card_error",
        "authentication_failed",
        charge["id"],
    )
    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert got["status"] == "failed"
    assert got["authentication"]["status"] == "failed"
    assert got["authentication"]["liability_shifted"] is False


async def test_an_authorization_needing_a_challenge_ends_authorized(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant, capture=False)

    await _customer_answers(client, charge, "complete")
    confirmed = await _confirm(client, merchant, charge["id"])
    captured = await client.post(f"/v1/charges/{charge['id']}/capture", headers=merchant.headers)

    assert confirmed.json()["status"] == "authorized"
    assert captured.status_code == 200
    assert captured.json()["status"] == "succeeded"


async def test_confirm_before_the_customer_is_done_changes_nothing(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)

    early = await _confirm(client, merchant, charge["id"])

    assert early.status_code == 202
    assert early.json()["status"] == "requires_action"
    assert early.json()["next_action"] == charge["next_action"]


async def test_confirm_replayed_answers_the_same_and_charges_once(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)
    await _customer_answers(client, charge, "complete")

    first = await _confirm(client, merchant, charge["id"])
    second = await _confirm(client, merchant, charge["id"])

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    payments = await query(runtime.db, "SELECT status FROM sandbox_payments WHERE charge_id = :id", id=charge["id"])
    assert [p["status"] for p in payments] == ["captured"]
    assert (await _events(runtime, charge["id"])).count("charge.succeeded") == 1


async def test_a_requires_action_answer_is_replayed_byte_for_byte(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    body = charge_body("tok_threeDSecureRequired", return_url=RETURN_URL)

    first = await post_charge(client, merchant, body, key="sca-replay-1")
    second = await post_charge(client, merchant, body, key="sca-replay-1")

    assert first.status_code == second.status_code == 202
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    count = await query(runtime.db, "SELECT count(*) FROM charges WHERE merchant_id = :m", m=merchant.id)
    assert count[0][0] == 1


async def test_another_merchants_charge_cannot_be_confirmed(runtime: Runtime, client: httpx.AsyncClient) -> None:
    owner, stranger = await create_merchant(runtime), await create_merchant(runtime)
    charge = await _waiting(client, owner)
    await _customer_answers(client, charge, "complete")

    foreign = await _confirm(client, stranger, charge["id"])
    unknown = await _confirm(client, stranger, "ch_" + "0" * 26)

    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json()["error"]["code"] == unknown.json()["error"]["code"] == "resource_missing"
    got = await client.get(f"/v1/charges/{charge['id']}", headers=owner.headers)
    assert got.json()["status"] == "requires_action"


async def test_confirm_of_a_final_charge_is_a_no_op_and_bad_details_are_refused(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    succeeded = (await post_charge(client, merchant, charge_body())).json()

    again = await _confirm(client, merchant, succeeded["id"])
    bad = await _confirm(client, merchant, succeeded["id"], details={"redirectResult": 7})

    assert again.status_code == 200  # final already: confirming it is a no-op
    assert again.json()["status"] == "succeeded"
    assert bad.status_code == 400


async def test_once_the_customer_is_sent_to_authenticate_the_charge_never_fails_over(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    body = {
        "amount": 1050,
        "currency": "usd",
        "return_url": RETURN_URL,
        "payment_method": {"tokens": {"sandbox": "tok_threeDSecureRequired", "sandbox_backup": "tok_visa"}},
    }
    charge = (await post_charge(client, merchant, body)).json()
    assert charge["status"] == "requires_action"

    await _customer_answers(client, charge, "fail")
    failed = await _confirm(client, merchant, charge["id"])

    assert failed.status_code == 402
    async with runtime.db.connection() as connection:
        attempts = await repo.list_attempts(connection, merchant.id, charge["id"])
    assert [(a.gateway, a.status) for a in attempts] == [("sandbox", "declined")]


async def test_an_off_session_charge_the_issuer_wants_authenticated_is_402_with_a_next_action(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    token = "tok_authenticationRequiredOffSession"

    present = await post_charge(client, merchant, charge_body(token))
    absent = await post_charge(client, merchant, charge_body(token, off_session=True, return_url=RETURN_URL))

    assert present.status_code == 201
    assert absent.status_code == 402, absent.text
    error = absent.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "authentication_required",
        "authentication_required",
    )
    assert error["next_action"]["type"] == "redirect_to_url"
    charge = (await client.get(f"/v1/charges/{error['charge']}", headers=merchant.headers)).json()
    assert charge["status"] == "requires_action"
    # The merchant brings the customer back: the same charge then completes.
    await _customer_answers(client, charge, "complete")
    confirmed = await _confirm(client, merchant, charge["id"])
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "succeeded"


async def test_an_abandoned_authentication_expires_canceled_and_voided(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)

    await _expire_now(runtime, charge["id"])
    await runtime.reconciler.run_once()

    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert got["status"] == "canceled"
    assert got["failure_code"] == "authentication_expired"
    assert got["next_action"] is None
    assert got["authentication"]["status"] == "expired"
    payments = await query(runtime.db, "SELECT status FROM sandbox_payments WHERE charge_id = :id", id=charge["id"])
    assert [p["status"] for p in payments] == ["voided"]
    assert await _events(runtime, charge["id"]) == ["charge.requires_action", "charge.authentication_expired"]
    # The customer comes back too late: the page has nothing to authenticate, confirm answers the charge.
    late = await client.post(_page_path(charge) + "/complete")
    assert late.status_code == 409
    confirmed = await _confirm(client, merchant, charge["id"])
    assert confirmed.status_code == 200
    assert confirmed.json()["status"] == "canceled"


async def test_a_completion_nobody_confirmed_wins_over_the_expiry(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = await _waiting(client, merchant)
    await _customer_answers(client, charge, "complete")  # ... and the merchant's confirm never came

    await _expire_now(runtime, charge["id"])
    await runtime.reconciler.run_once()

    got = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
    assert got["status"] == "succeeded"
    payments = await query(runtime.db, "SELECT status FROM sandbox_payments WHERE charge_id = :id", id=charge["id"])
    assert [p["status"] for p in payments] == ["captured"]


async def test_the_sca_retry_asks_for_a_challenge_on_the_same_gateway(database_url: str) -> None:
    async with own_app(database_url, routing={"sca_retry": True}) as (runtime, client):
        merchant = await create_merchant(runtime)
        response = await post_charge(client, merchant, charge_body("tok_authenticationRequired", return_url=RETURN_URL))
        async with runtime.db.connection() as connection:
            attempts = await repo.list_attempts(connection, merchant.id, response.json()["id"])

    assert response.status_code == 202, response.text
    assert response.json()["status"] == "requires_action"
    assert [(a.gateway, a.status, a.authentication_requested) for a in attempts] == [
        ("sandbox", "declined", False),
        ("sandbox", "requires_action", True),
    ]


async def test_without_the_sca_retry_authentication_required_is_a_decline(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)

    response = await post_charge(client, merchant, charge_body("tok_authenticationRequired"))

    assert response.status_code == 402
    assert response.json()["error"]["decline_code"] == "authentication_required"


async def test_a_stored_credential_keeps_its_network_transaction_id_for_off_session_charges(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    vaulted = await client.post(
        "/v1/payment_methods", json={"tokens": {"sandbox": "tok_visa"}}, headers=merchant.headers
    )
    pm = vaulted.json()["id"]

    setup = await post_charge(
        client, merchant, {**charge_body(), "payment_method": pm, "setup_future_usage": "off_session"}
    )
    later = await post_charge(client, merchant, {**charge_body(), "payment_method": pm, "off_session": True})

    assert setup.status_code == later.status_code == 201
    [stored] = await query(
        runtime.db, "SELECT network_transaction_ids FROM payment_methods WHERE merchant_id = :m", m=merchant.id
    )
    ntid = stored["network_transaction_ids"]["sandbox"]
    assert ntid.startswith("sbxntid_")
    async with runtime.db.connection() as connection:
        charge = await repo.get_charge(connection, merchant.id, later.json()["id"])
    assert charge is not None
    sent = lifecycle.job_for(charge).request("att_x", "sbxpm_x", "sandbox")
    assert (sent.presence.off_session, sent.presence.network_transaction_id) == (True, ntid)


async def _expire_now(runtime: Runtime, charge_id: str) -> None:
    """The authentication's expiry, reached: its attempt is due now."""
    await query(
        runtime.db,
        "UPDATE charge_attempts SET next_check_at = now() - interval '1 second' "
        "WHERE charge_id = :id AND status = 'requires_action'",
        id=charge_id,
    )
