"""Bank linking end to end against a fake OAuth provider on loopback, with the local secrets store.

The app is the real one over ASGI; the provider is a real HTTP server that checks the PKCE verifier
and the client credentials; the browser is played by following the provider's redirect back into
payorch's callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import make_settings
from tests.factories import MerchantFixture, create_merchant, fetch_rows, query
from tests.fakes.oauth_provider import FAILURE_URL, REDIRECT_URI, FakeOAuthProvider, TokenFault, banking_settings
from typer.testing import CliRunner

from payorch.app import create_app
from payorch.audit.events import Actor
from payorch.banking.service import BankLinkService, RefreshFailed
from payorch.cli import app as cli_app
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
    return tmp_path_factory.mktemp("payorch-data") / "secrets"


@pytest.fixture(scope="module")
def bank_settings(database_url: str, provider: FakeOAuthProvider, secrets_dir: Path) -> Settings:
    return make_settings(
        database_url, banking=banking_settings(provider, secrets_config={"local_directory": str(secrets_dir)})
    )


@pytest.fixture(scope="module")
async def bank_runtime(bank_settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    built = await Runtime.build(bank_settings, database_url)
    yield built
    await built.aclose()


@pytest.fixture(scope="module")
async def bank_client(bank_settings: Settings, bank_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(bank_settings, runtime=bank_runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http


@pytest.fixture(autouse=True)
def _clear_faults(provider: FakeOAuthProvider) -> Iterator[None]:
    yield
    provider.fault = None
    provider.deny_next = False


def service(runtime: Runtime) -> BankLinkService:
    assert runtime.bank_links is not None
    return runtime.bank_links


async def start_link(client: httpx.AsyncClient, merchant: MerchantFixture, user: str = "user-42") -> dict[str, Any]:
    response = await client.post("/v1/bank_links", json={"user_reference": user}, headers=merchant.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def follow_callback(client: httpx.AsyncClient, provider: FakeOAuthProvider, authorize_url: str) -> httpx.Response:
    """The browser: consent at the provider, then land on payorch's callback."""
    location = await provider.consent(authorize_url)
    assert location.startswith(REDIRECT_URI + "?")
    return await client.get(location.removeprefix("http://payorch.test"))


def secret_file(secrets_dir: Path, merchant_id: str, link_id: str) -> Path:
    directory = secrets_dir / "payorch" / merchant_id / "bank_links" / link_id / "refresh_token"
    current = (directory / "CURRENT").read_text().strip()
    return directory / f"{current}.json"


_ALL_AUDIT_EVENTS = (
    "SELECT p FROM (SELECT 0 AS part, seq, canonical::jsonb->'event' AS p FROM audit_chain "
    "UNION ALL SELECT 1 AS part, seq, payload AS p FROM audit_outbox) events WHERE "
)


async def audit_payloads(runtime: Runtime, condition: str, *args: Any) -> list[dict[str, Any]]:
    """Audit events matching ``condition`` (on ``p``, the payload; ``$1``... are ``args``), whether
    still in the outbox or already chained by a shipper some other test runs, in recording order:
    chain order, then outbox order (two events of one transaction may share an id's millisecond)."""
    rows = await fetch_rows(runtime.db, _ALL_AUDIT_EVENTS + condition + " ORDER BY part, seq", *args)
    return [row["p"] for row in rows]


async def audit_actions(runtime: Runtime, link_id: str) -> list[tuple[str, str]]:
    payloads = await audit_payloads(runtime, "p->'resource'->>'id' = $1", link_id)
    return [(p["action"], p["outcome"]) for p in payloads]


async def test_a_full_link_flow_stores_the_refresh_token_and_activates_the_link(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    assert created["id"].startswith("bl_")
    assert created["status"] == "pending"
    assert created["user_reference"] == "user-42"
    assert created["linked_at"] is None
    assert 9 * 60 <= created["expires_at"] - created["created"] <= 10 * 60 + 1
    url = httpx.URL(created["authorize_url"])
    query = dict(url.params)
    assert str(url).startswith(provider.authorize_url + "?")
    assert query["response_type"] == "code"
    assert query["client_id"] == provider.client_id
    assert query["redirect_uri"] == REDIRECT_URI
    assert query["scope"] == "accounts:read transactions:read"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) == 43  # 32 random bytes, base64url
    assert set(query) == {
        "response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method",
    }  # fmt: skip

    # Only the state's digest is stored.
    (row,) = await fetch_rows(
        bank_runtime.db, "SELECT state_hash, verifier_sealed FROM bank_link_states WHERE link_id = $1", created["id"]
    )
    assert bytes(row["state_hash"]) == hashlib.sha256(query["state"].encode()).digest()
    assert len(bytes(row["verifier_sealed"])) == 32

    callback = await follow_callback(bank_client, provider, created["authorize_url"])
    assert callback.status_code == 303
    assert callback.headers["referrer-policy"] == "no-referrer"
    location = httpx.URL(callback.headers["location"])
    assert str(location).startswith("https://shop.example/bank/linked?")
    assert dict(location.params) == {"from": "payorch", "bank_link": created["id"]}

    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["status"] == "active"
    assert link["linked_at"] is not None
    assert link["failure"] is None
    assert "token" not in json.dumps(link)

    stored = secret_file(secrets_dir, merchant.id, created["id"])
    assert json.loads(stored.read_text()) == {"refresh_token": provider.issued_refresh_tokens[-1]}
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    (sealed,) = await fetch_rows(
        bank_runtime.db, "SELECT verifier_sealed, consumed_at FROM bank_link_states WHERE link_id = $1", created["id"]
    )
    assert sealed["verifier_sealed"] is None  # used once, then dropped
    assert sealed["consumed_at"] is not None
    assert await audit_actions(bank_runtime, created["id"]) == [
        ("bank_link.created", "success"),
        ("bank_link.completed", "success"),
    ]


async def test_refresh_returns_an_access_token_and_stores_the_rotated_refresh_token(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime, provider: FakeOAuthProvider, secrets_dir: Path
) -> None:
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    assert (await follow_callback(bank_client, provider, created["authorize_url"])).status_code == 303
    first_refresh = provider.issued_refresh_tokens[-1]

    token = await service(bank_runtime).refresh(merchant.id, created["id"], actor=Actor(user="system:test"))
    assert token.access_token.get_secret_value() == provider.issued_access_tokens[-1]
    assert token.rotated
    assert token.expires_in == 900
    rotated = provider.issued_refresh_tokens[-1]
    assert rotated != first_refresh
    assert first_refresh not in provider.valid_refresh_tokens()
    assert json.loads(secret_file(secrets_dir, merchant.id, created["id"]).read_text())["refresh_token"] == rotated

    # The next refresh presents the rotated token, which the provider accepts.
    again = await service(bank_runtime).refresh(merchant.id, created["id"], actor=Actor(user="system:test"))
    assert again.access_token.get_secret_value() == provider.issued_access_tokens[-1]
    versions = sorted(p.name for p in secret_file(secrets_dir, merchant.id, created["id"]).parent.glob("*.json"))
    assert len(versions) == 2  # current and previous only
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["status"] == "active"
    assert link["refreshed_at"] is not None
    assert (await audit_actions(bank_runtime, created["id"]))[-2:] == [
        ("bank_link.refreshed", "success"),
        ("bank_link.refreshed", "success"),
    ]


async def test_a_refresh_token_the_provider_rejects_fails_the_link(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime, provider: FakeOAuthProvider
) -> None:
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    await follow_callback(bank_client, provider, created["authorize_url"])

    provider.fault = TokenFault.SERVER_ERROR
    with pytest.raises(RefreshFailed) as unavailable:
        await service(bank_runtime).refresh(merchant.id, created["id"], actor=Actor(user="system:test"))
    assert unavailable.value.error_code == "token_endpoint_unavailable"
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["status"] == "active"  # a provider outage does not kill the link

    provider.fault = TokenFault.INVALID_GRANT
    with pytest.raises(RefreshFailed) as rejected:
        await service(bank_runtime).refresh(merchant.id, created["id"], actor=Actor(user="system:test"))
    assert rejected.value.error_code == "refresh_rejected"
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["status"] == "failed"
    assert link["failure"]["code"] == "refresh_rejected"
    assert (await audit_actions(bank_runtime, created["id"]))[-3:] == [
        ("bank_link.refreshed", "failure"),
        ("bank_link.failed", "failure"),
        ("bank_link.refreshed", "failure"),
    ]


@pytest.mark.parametrize(
    ("fault", "failure_code"),
    [
        (TokenFault.INVALID_GRANT, "token_exchange_rejected"),
        (TokenFault.SERVER_ERROR, "token_endpoint_unavailable"),
        (TokenFault.GARBAGE, "token_endpoint_invalid_response"),
        (TokenFault.NO_REFRESH_TOKEN, "no_refresh_token"),
    ],
)
async def test_a_failing_token_endpoint_fails_the_link_and_stores_nothing(
    bank_client: httpx.AsyncClient,
    bank_runtime: Runtime,
    provider: FakeOAuthProvider,
    secrets_dir: Path,
    fault: TokenFault,
    failure_code: str,
) -> None:
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    provider.fault = fault
    callback = await follow_callback(bank_client, provider, created["authorize_url"])
    assert callback.status_code == 303
    location = httpx.URL(callback.headers["location"])
    assert str(location).startswith(FAILURE_URL + "?")
    assert dict(location.params) == {"bank_link": created["id"], "error": failure_code}
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["status"] == "failed"
    assert link["failure"]["code"] == failure_code
    assert link["failure"]["message"]
    assert not (secrets_dir / "payorch" / merchant.id).exists()
    assert await audit_actions(bank_runtime, created["id"]) == [
        ("bank_link.created", "success"),
        ("bank_link.failed", "failure"),
    ]


async def test_a_token_endpoint_that_never_answers_fails_the_link_after_the_timeout(
    database_url: str, provider: FakeOAuthProvider, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        banking=banking_settings(
            provider, secrets_config={"local_directory": str(tmp_path)}, token_timeout_seconds=0.5
        ),
    )
    runtime = await Runtime.build(settings, database_url)
    try:
        app = create_app(settings, runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as client:
            merchant = await create_merchant(runtime)
            created = await start_link(client, merchant)
            provider.fault = TokenFault.HANG
            hanging_before = provider.hanging
            callback = await follow_callback(client, provider, created["authorize_url"])
            assert provider.hanging == hanging_before + 1
            assert callback.status_code == 303
            assert httpx.URL(callback.headers["location"]).params["error"] == "token_endpoint_unavailable"
            link = (await client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
            assert link["status"] == "failed"
            assert link["failure"]["message"] == "The token endpoint did not answer in time."
            assert list(tmp_path.iterdir()) == []
    finally:
        provider.release()
        await runtime.aclose()


@pytest.mark.parametrize("method", ["client_secret_post", "client_secret_basic"])
async def test_client_authentication_follows_the_setting(database_url: str, tmp_path: Path, method: str) -> None:
    fake = FakeOAuthProvider(auth_method=method)
    fake.start()
    settings = make_settings(
        database_url, banking=banking_settings(fake, secrets_config={"local_directory": str(tmp_path)})
    )
    wrong = make_settings(
        database_url,
        banking=banking_settings(fake, secrets_config={"local_directory": str(tmp_path)}, client_secret="nope-123"),
    )
    runtimes = [await Runtime.build(settings, database_url), await Runtime.build(wrong, database_url)]
    try:
        outcomes = []
        for runtime, config in zip(runtimes, (settings, wrong), strict=True):
            app = create_app(config, runtime=runtime)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://payorch.test"
            ) as client:
                merchant = await create_merchant(runtime)
                created = await start_link(client, merchant)
                callback = await follow_callback(client, fake, created["authorize_url"])
                outcomes.append(httpx.URL(callback.headers["location"]).params.get("error"))
        assert outcomes == [None, "token_exchange_rejected"]
        assert fake.rejections == ["invalid_client: client authentication failed"]
    finally:
        for runtime in runtimes:
            await runtime.aclose()
        fake.stop()


async def test_retrieving_a_link_is_scoped_to_the_merchant_and_mode(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime
) -> None:
    owner = await create_merchant(bank_runtime)
    other = await create_merchant(bank_runtime)
    created = await start_link(bank_client, owner)
    for headers in (other.headers, owner.live_headers):
        response = await bank_client.get(f"/v1/bank_links/{created['id']}", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "resource_missing"
    missing = await bank_client.get("/v1/bank_links/bl_nothing", headers=owner.headers)
    assert missing.status_code == 404
    unauthenticated = await bank_client.get(f"/v1/bank_links/{created['id']}")
    assert unauthenticated.status_code == 401


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({}, "parameter_missing", "user_reference"),
        ({"user_reference": ""}, "parameter_invalid", "user_reference"),
        ({"user_reference": "x" * 256}, "parameter_invalid", "user_reference"),
        ({"user_reference": "line\nbreak"}, "parameter_invalid", "user_reference"),
        ({"user_reference": 42}, "parameter_invalid", "user_reference"),
        ({"user_reference": "u", "state": "mine"}, "parameter_unknown", "state"),
        ({"user_reference": "card 4242 4242 4242 4242"}, "card_data_not_allowed", None),
    ],
)
async def test_bad_create_requests_get_a_clear_400(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime, body: dict[str, Any], code: str, param: str | None
) -> None:
    merchant = await create_merchant(bank_runtime)
    response = await bank_client.post("/v1/bank_links", json=body, headers=merchant.headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    assert "4242 4242" not in response.text


async def test_without_a_provider_bank_links_answer_503(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    created = await client.post("/v1/bank_links", json={"user_reference": "u"}, headers=merchant.headers)
    assert created.status_code == 503
    assert created.json()["error"]["code"] == "bank_linking_not_configured"
    callback = await client.get("/v1/bank_links/callback?code=a&state=b")
    assert callback.status_code == 503


async def test_the_cli_refreshes_a_link_without_printing_any_token(
    bank_client: httpx.AsyncClient,
    bank_settings: Settings,
    bank_runtime: Runtime,
    provider: FakeOAuthProvider,
    secrets_dir: Path,
) -> None:
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    assert (await follow_callback(bank_client, provider, created["authorize_url"])).status_code == 303
    env = _settings_env(bank_settings)

    # The CLI runs its own event loop: give it a thread of its own.
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, ["bank-links", "refresh", created["id"]], env=env)
    assert result.exit_code == 0, result.output
    assert created["id"] in result.output
    assert "rotated" in result.output
    for token in provider.issued_access_tokens + provider.issued_refresh_tokens:
        assert token not in result.output
    stored = json.loads(secret_file(secrets_dir, merchant.id, created["id"]).read_text())["refresh_token"]
    assert stored == provider.issued_refresh_tokens[-1]
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    assert link["refreshed_at"] is not None
    actions = await audit_actions(bank_runtime, created["id"])
    assert actions[-1] == ("bank_link.refreshed", "success")

    missing = await asyncio.to_thread(CliRunner().invoke, cli_app, ["bank-links", "refresh", "bl_unknown"], env=env)
    assert missing.exit_code != 0
    assert "No such bank link" in missing.output


def _settings_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url is not None
    provider = settings.banking.provider
    assert provider is not None
    provider_json = {**provider.model_dump(mode="json"), "client_secret": provider.client_secret.get_secret_value()}
    return {
        "PAYORCH_ENVIRONMENT": "development",
        "PAYORCH_DATABASE_URL": settings.database_url.get_secret_value(),
        "PAYORCH_BANKING__PROVIDER": json.dumps(provider_json),
        "PAYORCH_BANKING__SECRETS__LOCAL_DIRECTORY": str(settings.banking.secrets.local_directory),
    }


def test_production_refuses_unsafe_bank_link_settings(provider: FakeOAuthProvider) -> None:
    from pydantic import ValidationError

    from payorch.banking.config import BankingConfig

    aws = {"aws": {"region": "eu-west-1"}}
    base = banking_settings(provider, secrets_config=aws)
    https = {
        key: value.replace("http://", "https://") if isinstance(value, str) else value
        for key, value in base["provider"].items()  # type: ignore[union-attr]
    }
    assert BankingConfig().production_problems() == []  # no provider: nothing to check
    assert BankingConfig(provider=https, secrets=aws).production_problems() == []
    assert (
        BankingConfig(provider=base["provider"], secrets=aws)
        .production_problems()[0]
        .startswith("banking.provider: https required in production")
    )
    assert BankingConfig(provider=https).production_problems() == [
        "banking: production keeps refresh tokens in AWS Secrets Manager (banking.secrets.aws)"
    ]
    placeholder = BankingConfig(provider={**https, "client_secret": "changeme"}, secrets=aws)
    assert placeholder.production_problems() == ["banking.provider: placeholder client secret refused in production"]
    # Settings applies them in production only.
    assert Settings(banking={"provider": base["provider"]}).banking.provider is not None
    with pytest.raises(ValidationError, match="AWS Secrets Manager"):
        Settings(environment="production", database_url="postgresql+asyncpg://u@db/p", banking={"provider": https})
    with pytest.raises(ValidationError, match="absolute http"):
        BankingConfig(provider={**https, "token_url": "/token"})


@pytest.mark.parametrize(
    "description",
    [
        '<script>alert("x")</script><img src=x onerror=alert(1)>Denied &lt;b&gt;',
        "Denied\x07\x1b[31m\u202e\u200b\r\nInjected-Header: 1",  # (a NUL is refused before: a 400)
        "Denied " + "A" * 20_000,
    ],
)
async def test_the_providers_error_description_is_stored_and_shown_without_markup_and_bounded(
    bank_client: httpx.AsyncClient, bank_runtime: Runtime, description: str
) -> None:
    """The callback's ``error_description`` comes through the end user's browser: anyone can write it."""
    merchant = await create_merchant(bank_runtime)
    created = await start_link(bank_client, merchant)
    state = httpx.URL(created["authorize_url"]).params["state"]
    params = {"state": state, "error": "access_denied<b>", "error_description": description}
    callback = await bank_client.get("/v1/bank_links/callback", params=params)
    assert callback.status_code == 303, callback.text
    link = (await bank_client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)).json()
    message = link["failure"]["message"]
    assert link["failure"]["code"] == "provider_error"
    assert message.startswith("The provider answered access_denied")
    assert "Denied" in message
    assert len(message) <= 450
    assert not set(message) & set('<>"\\&\x00\x07\x1b\r\n\u202e\u200b')
    (stored,) = await query(
        bank_runtime.db, "SELECT failure_message FROM bank_links WHERE merchant_id = :m", m=merchant.id
    )
    assert stored["failure_message"] == message
