"""The dashboard over HTTP in process: sessions, CSRF, lockout, merchant isolation, the same answers
as the API. The browser tests (tests/browser/) drive the same pages in Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest
from tests.conftest import own_app
from tests.factories import charge_body, create_merchant, post_charge, query
from tests.integration.dashboard_support import csrf, new_user, sign_in

from payorch.audit.events import Actor
from payorch.dashboard.services import session_codec
from payorch.dashboard.sessions import COOKIE_NAME
from payorch.runtime import Runtime

pytestmark = pytest.mark.timeout(180)

@pytest.fixture
async def app(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with own_app(database_url, dashboard={"lockout_threshold": 3}) as built:
        yield built


async def test_sign_in_rotates_the_session_and_a_page_needs_it(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)

    anonymous = await client.get("/dashboard/payments")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/dashboard/sign-in")

    before = await client.get("/dashboard/sign-in")
    cookie = before.headers["set-cookie"]
    assert {"HttpOnly", "SameSite=Lax", "Path=/dashboard"} <= {part.strip() for part in cookie.split(";")}
    assert "Secure" not in cookie  # plain http on loopback: `make run` must be able to sign in
    signed = await client.post(
        "/dashboard/sign-in", data={"csrf_token": csrf(before), "email": email.upper(), "password": password}
    )
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/dashboard/payments"
    page = await client.get("/dashboard/payments")
    assert page.status_code == 200
    assert email in page.text
    assert csrf(page) != csrf(before)  # a new session id at sign-in: the old token is worthless
    assert "default-src 'self'" in page.headers["content-security-policy"]


async def test_a_form_without_its_csrf_token_is_refused(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)
    assert (await sign_in(client, email, password)).status_code == 303
    refused = await client.post("/dashboard/api-keys", data={"mode": "test"})
    assert refused.status_code == 403
    assert "security token" in refused.text
    forged = await client.post("/dashboard/api-keys", data={"mode": "test", "csrf_token": "0" * 64})
    assert forged.status_code == 403
    keys = await query(runtime.db, "SELECT count(*) AS n FROM api_keys WHERE merchant_id = :m", m=merchant.id)
    assert keys[0]["n"] == 2  # the factory's two, none from the refused forms


async def test_another_merchants_charge_is_not_found_as_in_the_api(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    mine, theirs = await create_merchant(runtime), await create_merchant(runtime)
    charge = (await post_charge(client, theirs, charge_body())).json()
    api = await client.get(f"/v1/charges/{charge['id']}", headers=mine.headers)
    email, password = await new_user(runtime, mine.id)
    await sign_in(client, email, password)
    page = await client.get(f"/dashboard/charges/{charge['id']}")
    assert (page.status_code, api.status_code) == (404, 404)
    assert api.json()["error"]["message"] in page.text.replace("&#39;", "'")
    refund = await client.post(
        f"/dashboard/charges/{charge['id']}/refund", data={"csrf_token": csrf(await client.get("/dashboard/payments"))}
    )
    assert refund.status_code == 404
    refunds = await query(runtime.db, "SELECT count(*) AS n FROM refunds WHERE charge_id = :c", c=charge["id"])
    assert refunds[0]["n"] == 0


async def test_repeated_failures_lock_the_user_until_unlocked(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)
    answers = [(await sign_in(client, email, "wrong password")).status_code for _ in range(3)]
    assert answers == [401, 401, 423]
    locked = await sign_in(client, email, password)
    assert locked.status_code == 423
    assert "locked" in locked.text
    assert await runtime.dashboard_users.unlock(email, actor=Actor(user="test")) is not None
    assert (await sign_in(client, email, password)).status_code == 303
    actions = await query(
        runtime.db,
        "SELECT payload->>'action' AS action, payload->'details'->>'reason' AS reason FROM audit_outbox "
        "WHERE payload->'resource'->>'type' = 'dashboard_user' AND payload->'actor'->>'user' = :u ORDER BY seq",
        u=f"dashboard:{email}",
    )
    assert [(row["action"], row["reason"]) for row in actions] == [
        ("dashboard_user.sign_in_failed", "password"),
        ("dashboard_user.sign_in_failed", "password"),
        ("dashboard_user.sign_in_failed", "password"),
        ("dashboard_user.locked", None),
        ("dashboard_user.sign_in_failed", "locked"),
        ("dashboard_user.signed_in", None),
    ]


async def test_signing_out_ends_the_session_even_for_a_copied_cookie(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)
    await sign_in(client, email, password)
    page = await client.get("/dashboard/payments")
    copied = dict(client.cookies)
    out = await client.post("/dashboard/sign-out", data={"csrf_token": csrf(page)})
    assert out.status_code == 303
    client.cookies.clear()
    client.cookies.update(copied)
    again = await client.get("/dashboard/payments")
    assert again.status_code == 303  # the old cookie's generation is gone


async def test_the_dashboard_is_not_in_the_openapi_document(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    _, client = app
    document = (await client.get("/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/dashboard")]


async def test_a_session_over_https_gets_a_secure_cookie(database_url: str) -> None:
    async with own_app(database_url) as (_, client):
        answer = await client.get("https://payorch.test/dashboard/sign-in")
    assert "Secure" in {part.strip() for part in answer.headers["set-cookie"].split(";")}


async def test_an_idle_session_ends(app: tuple[Runtime, httpx.AsyncClient]) -> None:
    runtime, client = app
    merchant = await create_merchant(runtime)
    email, password = await new_user(runtime, merchant.id)
    assert (await sign_in(client, email, password)).status_code == 303
    codec = session_codec(runtime.settings.dashboard, data_dir=runtime.settings.data_dir)
    assert codec is not None
    session = codec.loads(client.cookies[COOKIE_NAME])
    assert session is not None
    assert session.user_id is not None
    idle = replace(session, seen_at=session.seen_at - codec.idle_seconds - 1)  # as if untouched since
    client.cookies.set(COOKIE_NAME, codec.dumps(idle), domain="payorch.test", path="/dashboard")
    later = await client.get("/dashboard/payments")
    assert later.status_code == 303
    again = await client.get(later.headers["location"])
    assert "Your session ended (15 minutes idle)" in again.text
