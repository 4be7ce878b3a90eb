"""The dashboard's pages and actions in process: the search filters and their SQL, capture, cancel
and refund through the API's services (same rules, same errors, same idempotency), API keys, the
operator's merchant picker, the Audit page and dead letters."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query
from tests.fakes.merchant_endpoint import MerchantEndpoint
from tests.integration.dashboard_support import new_user, post_form, sign_in

from payorch.runtime import Runtime
from payorch.storage.charge_search import ChargeFilter, search_charges

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def app(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with own_app(database_url) as built:
        yield built


async def signed_in_merchant(runtime: Runtime, client: httpx.AsyncClient) -> MerchantFixture:
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)
    assert (await sign_in(client, email, password)).status_code == 303
    return merchant


def text(page: httpx.Response) -> str:
    return html.unescape(page.text)


async def test_the_search_filters_are_bound_and_page_by_cursor(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    made = [
        (await post_charge(client, merchant, charge_body(token, amount=amount))).json()
        for token, amount in (("tok_visa", 500), ("tok_amex", 1500), ("tok_visa", 2500), ("tok_chargeDeclined", 3500))
    ]
    ids = [charge.get("id") or charge["error"]["charge"] for charge in made]
    now = datetime.now(UTC)
    async with runtime.db.connection() as connection:

        async def found(**filters: object) -> list[str]:
            page, _ = await search_charges(connection, ChargeFilter(merchant.id, **filters), limit=10)  # type: ignore[arg-type]
            return [charge.id for charge in page]

        assert await found() == ids[::-1]
        assert await found(card_last4="4242") == [ids[2], ids[0]]
        assert await found(status="failed") == [ids[3]]
        assert await found(amount_min=1000, amount_max=2500, currency="usd") == [ids[2], ids[1]]
        assert await found(created_from=now - timedelta(hours=1), created_before=now + timedelta(hours=1)) == ids[::-1]
        assert await found(created_before=now - timedelta(hours=1)) == []
        assert await found(charge_id=ids[1], gateway="sandbox", livemode=False) == [ids[1]]
        assert await found(card_last4="4242'; DROP TABLE charges; --") == []
        first, more = await search_charges(connection, ChargeFilter(merchant.id), limit=3)
        assert ([c.id for c in first], more) == (ids[:0:-1], True)
        older, more = await search_charges(connection, ChargeFilter(merchant.id), limit=3, starting_after=first[-1].id)
        assert ([c.id for c in older], more) == ([ids[0]], False)
        newer, more = await search_charges(connection, ChargeFilter(merchant.id), limit=3, ending_before=older[0].id)
        assert ([c.id for c in newer], more) == (ids[:0:-1], False)


async def test_the_payments_page_shows_what_matches_and_refuses_bad_filters(
    app: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = app
    merchant = await signed_in_merchant(runtime, client)
    visa = (await post_charge(client, merchant, charge_body("tok_visa"))).json()
    amex = (await post_charge(client, merchant, charge_body("tok_amex"))).json()
    page = await client.get("/dashboard/payments", params={"last4": "8431"})
    assert page.status_code == 200
    assert amex["id"] in page.text
    assert visa["id"] not in page.text
    bad = await client.get("/dashboard/payments", params={"last4": "84", "amount_min": "10", "status": "paid"})
    assert bad.status_code == 400
    assert "four digits" in bad.text
    assert "Choose a currency" in bad.text
    assert "Unknown status" in text(bad)


async def test_refunds_follow_the_apis_rules_errors_and_idempotency(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await signed_in_merchant(runtime, client)
    charge = (await post_charge(client, merchant, charge_body(amount=1000))).json()
    page = f"/dashboard/charges/{charge['id']}"
    routing = text(await client.get(page)).split('id="routing"')[1].split("</dl>")[0]
    assert "priority" in routing  # the decision the charge recorded, as the API shows it
    assert "<dt>Skipped sandbox_backup</dt><dd>no_token</dd>" in routing
    refund = f"{page}/refund"
    too_much = await post_form(client, page, refund, amount="12.00", idempotency_key="dash_a")
    assert too_much.status_code == 303
    shown = text(await client.get(page))
    assert (
        "Refund amount (1200) is greater than what is left to refund on this charge (1000). (amount_too_large)" in shown
    )
    for _ in range(2):  # the same form sent twice: one refund
        await post_form(client, page, refund, amount="2.50", idempotency_key="dash_b")
    assert "the same form was sent before" in text(await client.get(page))
    rows = await query(runtime.db, "SELECT amount, status FROM refunds WHERE charge_id = :c", c=charge["id"])
    assert [(row["amount"], row["status"]) for row in rows] == [(250, "succeeded")]
    api = await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)
    assert api.json()["amount_refunded"] == 250
    audit = await query(
        runtime.db,
        "SELECT payload->'actor'->>'user' AS who FROM audit_outbox WHERE payload->>'action' = 'refund.created' "
        "AND payload->'details'->>'charge' = :c",
        c=charge["id"],
    )
    assert [row["who"] for row in audit] == [f"dashboard:{(await _email_of(runtime, merchant))}"]


async def _email_of(runtime: Runtime, merchant: MerchantFixture) -> str:
    rows = await query(runtime.db, "SELECT email FROM dashboard_users WHERE merchant_id = :m", m=merchant.id)
    return str(rows[0]["email"])


async def test_capture_and_cancel_go_through_the_capture_service(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await signed_in_merchant(runtime, client)
    held = (await post_charge(client, merchant, charge_body(amount=2000, capture=False))).json()
    assert held["status"] == "authorized"
    page = f"/dashboard/charges/{held['id']}"
    await post_form(client, page, f"{page}/capture", amount="15.00")
    captured = (await client.get(f"/v1/charges/{held['id']}", headers=merchant.headers)).json()
    assert (captured["status"], captured["amount_captured"]) == ("succeeded", 1500)
    await post_form(client, page, f"{page}/cancel")
    assert "A captured charge cannot be canceled; refund it instead. (charge_already_captured)" in text(
        await client.get(page)
    )


async def test_api_keys_are_shown_once_and_revoked_only_for_their_merchant(
    app: tuple[Runtime, httpx.AsyncClient],
) -> None:
    runtime, client = app
    merchant = await signed_in_merchant(runtime, client)
    other = await create_merchant(runtime)
    created = await post_form(client, "/dashboard/api-keys", "/dashboard/api-keys", mode="live")
    assert created.status_code == 200
    assert "shown this once" in created.text
    listing = await client.get("/dashboard/api-keys")
    secret = created.text.split('id="new-key" readonly size="60" value="')[1].split('"')[0]
    assert secret.startswith("sk_live_")
    assert secret not in listing.text
    charge = await client.post("/v1/charges", json=charge_body(), headers={"Authorization": f"Bearer {secret}"})
    assert charge.status_code == 201
    assert (
        await post_form(client, "/dashboard/api-keys", f"/dashboard/api-keys/{other.key_id}/revoke")
    ).status_code == 404
    assert (await client.get("/v1/charges", headers=other.headers)).status_code == 200
    revoked = await post_form(client, "/dashboard/api-keys", f"/dashboard/api-keys/{merchant.key_id}/revoke")
    assert revoked.status_code == 303
    assert (await client.get("/v1/charges", headers=merchant.headers)).status_code == 401


async def test_operators_pick_a_merchant_and_see_the_audit_page(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await signed_in_merchant(runtime, client)
    assert (await client.get("/dashboard/audit")).status_code == 403
    someone = await create_merchant(runtime)
    theirs = (await post_charge(client, someone, charge_body())).json()
    assert (await client.get(f"/dashboard/charges/{theirs['id']}")).status_code == 404
    email, password = await new_user(runtime, None)
    client.cookies.clear()  # another person at another browser
    assert (await sign_in(client, email, password)).status_code == 303
    await post_form(
        client, "/dashboard/payments", "/dashboard/merchant", merchant_id=someone.id, back="/dashboard/payments"
    )
    assert (await client.get(f"/dashboard/charges/{theirs['id']}")).status_code == 200
    audit = await client.get("/dashboard/audit")
    assert audit.status_code == 200
    assert "local" in audit.text
    verified = await post_form(client, "/dashboard/audit", "/dashboard/audit/verify")
    assert verified.status_code == 303
    rows = await query(
        runtime.db, "SELECT sink, ok FROM audit_verifications WHERE verified_by = :u", u=f"dashboard:{email}"
    )
    assert [row["sink"] for row in rows] == ["local"]
    events = await query(
        runtime.db,
        "SELECT payload->>'outcome' AS outcome FROM audit_outbox "
        "WHERE payload->>'action' = 'audit_trail.verified' AND payload->'actor'->>'user' = :u",
        u=f"dashboard:{email}",
    )
    assert [row["outcome"] for row in events] == ["success" if rows[0]["ok"] else "failure"]
    assert merchant.id != someone.id


async def test_a_dead_letter_is_listed_and_redelivered_from_the_webhooks_page(database_url: str) -> None:
    with MerchantEndpoint() as receiver:
        async with own_app(database_url, webhooks={"allow_loopback_endpoints": True}) as (runtime, client):
            merchant = await signed_in_merchant(runtime, client)
            made = await client.post(
                "/v1/webhook_endpoints",
                json={"url": receiver.url, "enabled_events": ["charge.succeeded"]},
                headers=merchant.headers,
            )
            assert made.status_code == 201
            receiver.fail_next(1)
            charge = (await post_charge(client, merchant, charge_body())).json()
            await runtime.webhooks.dispatcher.run_once()
            assert [arrival.status for arrival in receiver.arrivals] == [503]
            # The retry window (at least 24 hours) has run out: the dispatcher gives up on it.
            await query(
                runtime.db,
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_at = NULL WHERE merchant_id = :m",
                m=merchant.id,
            )
            page = await client.get("/dashboard/webhooks")
            dead = page.text.split('id="dead-heading"')[1]
            assert charge["id"] in dead
            delivery_id = dead.split('data-delivery="')[1].split('"')[0]
            requeued = await post_form(
                client,
                "/dashboard/webhooks",
                f"/dashboard/deliveries/{delivery_id}/redeliver",
                endpoint_id=made.json()["id"],
                mode="test",
                back="/dashboard/webhooks",
            )
            assert requeued.status_code == 303
            await runtime.webhooks.dispatcher.run_once()
            assert [arrival.status for arrival in receiver.arrivals] == [503, 200]
            assert len({arrival.webhook_id for arrival in receiver.arrivals}) == 1
            after = (await client.get("/dashboard/webhooks")).text
            assert delivery_id not in after.split('id="dead-heading"')[1]
