"""The callback's defences (the seed's flaw was ``state`` used as the user id): a missing, unknown,
expired, reused or other-merchant state, and a provider ``error``, are each refused; a link is
failed where there is one; nothing reaches the token endpoint or the secrets store."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import make_settings
from tests.factories import create_merchant, fetch_rows
from tests.fakes.oauth_provider import FAILURE_URL, FakeOAuthProvider, banking_settings
from tests.integration.test_bank_links import audit_actions, audit_payloads, follow_callback, start_link

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payorch-csrf") / "secrets"


@pytest.fixture(scope="module")
def csrf_settings(database_url: str, provider: FakeOAuthProvider, secrets_dir: Path) -> Settings:
    return make_settings(
        database_url, banking=banking_settings(provider, secrets_config={"local_directory": str(secrets_dir)})
    )


@pytest.fixture(scope="module")
async def csrf_runtime(csrf_settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    built = await Runtime.build(csrf_settings, database_url)
    yield built
    await built.aclose()


@pytest.fixture(scope="module")
async def csrf_client(csrf_settings: Settings, csrf_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(csrf_settings, runtime=csrf_runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http


def callback_path(location: str) -> str:
    return location.removeprefix("http://payorch.test")


async def refusal_audited(runtime: Runtime, response: httpx.Response) -> list[dict[str, object]]:
    return await audit_payloads(runtime, "p->'origin'->>'request_id' = $1", response.headers["request-id"])


async def link_of(client: httpx.AsyncClient, merchant, link_id: str) -> dict[str, object]:
    response = await client.get(f"/v1/bank_links/{link_id}", headers=merchant.headers)
    assert response.status_code == 200
    return response.json()


async def test_a_callback_without_state_is_refused(csrf_client: httpx.AsyncClient, csrf_runtime: Runtime) -> None:
    response = await csrf_client.get("/v1/bank_links/callback?code=whatever")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "state_missing"
    assert response.json()["error"]["param"] == "state"
    page = await csrf_client.get("/v1/bank_links/callback", headers={"Accept": "text/html,*/*"})
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "could not be completed" in page.text
    assert page.headers["request-id"] in page.text
    [event] = await refusal_audited(csrf_runtime, response)
    assert event["action"] == "bank_link.callback_refused"
    assert event["details"]["reason"] == "state_missing"


async def test_an_unknown_state_is_refused_and_nothing_is_exchanged(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider
) -> None:
    before = len(provider.token_requests)
    forged = secrets.token_urlsafe(32)
    for query in (f"code=stolen&state={forged}", f"error=access_denied&state={forged}", "code=x&state=user-42"):
        response = await csrf_client.get(f"/v1/bank_links/callback?{query}")
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "state_unknown"
    assert len(provider.token_requests) == before
    [event] = await refusal_audited(csrf_runtime, response)
    assert event["outcome"] == "failure"
    assert forged not in str(event)


async def test_an_expired_state_fails_its_link(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    merchant = await create_merchant(csrf_runtime)
    created = await start_link(csrf_client, merchant)
    # Time passes: the state's window closes.
    await fetch_rows(
        csrf_runtime.db,
        "UPDATE bank_link_states SET expires_at = now() - interval '1 second' WHERE link_id = $1",
        created["id"],
    )
    before = len(provider.token_requests)
    callback = await follow_callback(csrf_client, provider, created["authorize_url"])
    assert callback.status_code == 303
    location = httpx.URL(callback.headers["location"])
    assert str(location).startswith(FAILURE_URL)
    assert dict(location.params) == {"bank_link": created["id"], "error": "state_expired"}
    assert len(provider.token_requests) == before
    link = await link_of(csrf_client, merchant, created["id"])
    assert link["status"] == "failed"
    assert link["failure"]["code"] == "state_expired"
    assert not (secrets_dir / "payorch" / merchant.id).exists()


async def test_a_reused_state_is_refused_and_leaves_the_completed_link_alone(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider
) -> None:
    merchant = await create_merchant(csrf_runtime)
    created = await start_link(csrf_client, merchant)
    location = await provider.consent(created["authorize_url"])
    first = await csrf_client.get(callback_path(location))
    assert first.status_code == 303
    assert "error" not in httpx.URL(first.headers["location"]).params
    before = len(provider.token_requests)

    replay = await csrf_client.get(callback_path(location))
    assert replay.status_code == 400
    assert replay.json()["error"]["code"] == "state_used"
    # A fresh code with the old state is no better.
    fresh = await provider.consent(created["authorize_url"])
    again = await csrf_client.get(callback_path(fresh))
    assert again.status_code == 400
    assert len(provider.token_requests) == before
    link = await link_of(csrf_client, merchant, created["id"])
    assert link["status"] == "active"  # a replayed URL cannot fail a link someone completed
    [event] = await refusal_audited(csrf_runtime, replay)
    assert event["resource"] == {"type": "bank_link", "id": created["id"]}
    assert event["details"]["reason"] == "state_used"


async def test_concurrent_callbacks_with_one_state_let_exactly_one_through(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    merchant = await create_merchant(csrf_runtime)
    created = await start_link(csrf_client, merchant)
    location = await provider.consent(created["authorize_url"])
    before = len(provider.token_requests)
    responses = await asyncio.gather(*(csrf_client.get(callback_path(location)) for _ in range(4)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [303, 400, 400, 400]
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 400} == {"state_used"}
    assert len(provider.token_requests) == before + 1
    versions = list((secrets_dir / "payorch" / merchant.id).rglob("*.json"))
    assert len(versions) == 1
    assert (await link_of(csrf_client, merchant, created["id"]))["status"] == "active"


async def test_a_provider_error_fails_the_link_without_a_token_request(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    merchant = await create_merchant(csrf_runtime)
    created = await start_link(csrf_client, merchant)
    provider.deny_next = True
    before = len(provider.token_requests)
    callback = await follow_callback(csrf_client, provider, created["authorize_url"])
    assert callback.status_code == 303
    assert dict(httpx.URL(callback.headers["location"]).params) == {
        "bank_link": created["id"],
        "error": "provider_error",
    }
    assert len(provider.token_requests) == before
    link = await link_of(csrf_client, merchant, created["id"])
    assert link["status"] == "failed"
    assert link["failure"] == {
        "code": "provider_error",
        "message": "The provider answered access_denied: The user said no.",
    }
    assert not (secrets_dir / "payorch" / merchant.id).exists()
    assert await audit_actions(csrf_runtime, created["id"]) == [
        ("bank_link.created", "success"),
        ("bank_link.failed", "failure"),
    ]


async def test_a_valid_state_without_a_code_fails_the_link(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime
) -> None:
    merchant = await create_merchant(csrf_runtime)
    created = await start_link(csrf_client, merchant)
    state = httpx.URL(created["authorize_url"]).params["state"]
    callback = await csrf_client.get(f"/v1/bank_links/callback?state={state}")
    assert callback.status_code == 303
    assert httpx.URL(callback.headers["location"]).params["error"] == "code_missing"
    assert (await link_of(csrf_client, merchant, created["id"]))["status"] == "failed"


async def test_another_merchants_state_cannot_complete_anything_else(
    csrf_client: httpx.AsyncClient, csrf_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    """The callback carries no API key, so "other merchant" means: whatever state arrives, it can only
    ever act on the one link it was minted for, with that link's user and PKCE verifier. Here an
    attacker who completed the provider step for merchant B's link injects the victim's code (issued
    for merchant A's link) into B's callback: PKCE binds the code to A's verifier, so the exchange
    fails, B's link fails, A's link is untouched and still completes with its own state."""
    merchant_a = await create_merchant(csrf_runtime)
    merchant_b = await create_merchant(csrf_runtime)
    link_a = await start_link(csrf_client, merchant_a, user="alice")
    link_b = await start_link(csrf_client, merchant_b, user="mallory")
    code_a = httpx.URL(await provider.consent(link_a["authorize_url"])).params["code"]
    state_b = httpx.URL(link_b["authorize_url"]).params["state"]

    mixed = await csrf_client.get("/v1/bank_links/callback", params={"code": code_a, "state": state_b})
    assert mixed.status_code == 303
    assert dict(httpx.URL(mixed.headers["location"]).params) == {
        "bank_link": link_b["id"],
        "error": "token_exchange_rejected",
    }
    assert provider.rejections[-1] == "invalid_grant: PKCE verification failed"
    assert (await link_of(csrf_client, merchant_b, link_b["id"]))["status"] == "failed"
    assert (await link_of(csrf_client, merchant_a, link_a["id"]))["status"] == "pending"
    assert not (secrets_dir / "payorch" / merchant_a.id).exists()
    assert not (secrets_dir / "payorch" / merchant_b.id).exists()
    # B's key cannot see A's link, and A's state was not spent: A's user finishes normally.
    assert (await csrf_client.get(f"/v1/bank_links/{link_a['id']}", headers=merchant_b.headers)).status_code == 404
    done = await follow_callback(csrf_client, provider, link_a["authorize_url"])
    assert dict(httpx.URL(done.headers["location"]).params)["bank_link"] == link_a["id"]
    completed = await link_of(csrf_client, merchant_a, link_a["id"])
    assert completed["status"] == "active"
    assert completed["user_reference"] == "alice"
    [completion] = await audit_payloads(
        csrf_runtime, "p->>'action' = 'bank_link.completed' AND p->'resource'->>'id' = $1", link_a["id"]
    )
    assert completion["actor"] == {"merchant_id": merchant_a.id, "api_key_id": None, "user": "end_user:alice"}
