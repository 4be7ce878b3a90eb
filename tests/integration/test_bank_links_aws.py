"""Refresh tokens in AWS Secrets Manager (moto's server mode, the real boto3 client over HTTP), and
the leak hunt: during a full link flow and refreshes, no refresh or access token appears in any log
line, response body, database row or audit event."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr
from tests.conftest import make_settings
from tests.factories import create_merchant
from tests.fakes.oauth_provider import FakeOAuthProvider, banking_settings
from tests.integration.test_bank_links import audit_payloads, start_link

from payorch.app import create_app
from payorch.audit.events import Actor
from payorch.banking.config import AwsSecretsConfig
from payorch.banking.secrets import (
    AwsSecretsManagerStore,
    SecretNotFound,
    SecretsStoreError,
    make_secretsmanager_client,
)
from payorch.runtime import Runtime
from payorch.settings import Settings

CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def aws_config(moto_url: str) -> dict[str, Any]:
    return {**CREDENTIALS, "endpoint_url": moto_url, "connect_timeout_seconds": 2, "read_timeout_seconds": 5}


@pytest.fixture(scope="module")
def secretsmanager(moto_url: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return session.client("secretsmanager", endpoint_url=moto_url)


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def aws_settings(database_url: str, provider: FakeOAuthProvider, aws_config: dict[str, Any]) -> Settings:
    return make_settings(
        database_url, banking=banking_settings(provider, secrets_config={"aws": aws_config, "name_prefix": "leaktest"})
    )


@pytest.fixture(scope="module")
async def aws_runtime(aws_settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    built = await Runtime.build(aws_settings, database_url)
    yield built
    await built.aclose()


async def test_writes_are_idempotent_per_request_token_and_rotate_versions(
    aws_config: dict[str, Any], secretsmanager: Any
) -> None:
    store = AwsSecretsManagerStore(make_secretsmanager_client(AwsSecretsConfig(**aws_config)))
    name = f"payorch/mer_test/bank_links/bl_{uuid.uuid4().hex}/refresh_token"
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    assert await store.put(name, SecretStr("rt-one"), request_token=first) == first
    assert await store.put(name, SecretStr("rt-one"), request_token=first) == first  # a retry: no new version
    assert (await store.get(name)).get_secret_value() == "rt-one"
    assert await store.put(name, SecretStr("rt-two"), request_token=second) == second
    assert (await store.get(name)).get_secret_value() == "rt-two"
    versions = secretsmanager.list_secret_version_ids(SecretId=name)["Versions"]
    stages = {v["VersionId"]: set(v["VersionStages"]) for v in versions}
    assert stages == {first: {"AWSPREVIOUS"}, second: {"AWSCURRENT"}}
    # One request token can never name two different values.
    with pytest.raises(SecretsStoreError) as reused:
        await store.put(name, SecretStr("rt-three"), request_token=first)
    assert "rt-three" not in str(reused.value)
    with pytest.raises(SecretNotFound):
        await store.get(f"payorch/mer_test/bank_links/bl_{uuid.uuid4().hex}/refresh_token")


async def test_an_unreachable_secrets_manager_is_an_error_within_the_timeouts() -> None:
    config = AwsSecretsConfig(
        **CREDENTIALS, endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_seconds=1, max_attempts=1
    )
    store = AwsSecretsManagerStore(make_secretsmanager_client(config))
    with pytest.raises(SecretsStoreError) as unavailable:
        await store.put("payorch/m/bank_links/b/refresh_token", SecretStr("rt-x"), request_token=str(uuid.uuid4()))
    assert "unavailable" in str(unavailable.value)
    assert "rt-x" not in str(unavailable.value)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[_Capture]:
    """Every log record of every logger, at DEBUG, formatted with its traceback."""
    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)


async def database_text(runtime: Runtime) -> str:
    """Every row of every table of the test database, as text."""
    async with runtime.db.connection() as connection:
        tables = await connection.fetch(
            "SELECT quote_ident(table_name) FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
        )
        dumps = []
        for (table,) in tables:
            rows = await connection.fetch(f"SELECT t::text FROM {table} t")  # noqa: S608 - catalog names
            dumps.extend(row[0] for row in rows)
    return "\n".join(dumps)


async def test_no_token_leaks_anywhere_during_a_full_flow_and_refreshes(
    aws_settings: Settings,
    aws_runtime: Runtime,
    provider: FakeOAuthProvider,
    secretsmanager: Any,
    all_logs: _Capture,
) -> None:
    bodies: list[str] = []

    async def keep_body(response: httpx.Response) -> None:
        await response.aread()
        bodies.append(f"{response.status_code} {dict(response.headers)} {response.text}")

    app = create_app(aws_settings, runtime=aws_runtime)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://payorch.test",
        event_hooks={"response": [keep_body]},
    ) as client:
        merchant = await create_merchant(aws_runtime)
        created = await start_link(client, merchant, user="leak-hunt-user")
        location = await provider.consent(created["authorize_url"])
        callback = await client.get(location.removeprefix("http://payorch.test"))
        assert callback.status_code == 303
        assert "error" not in httpx.URL(callback.headers["location"]).params
        replay = await client.get(location.removeprefix("http://payorch.test"))
        assert replay.status_code == 400
        service = aws_runtime.bank_links
        assert service is not None
        for _ in range(2):
            token = await service.refresh(merchant.id, created["id"], actor=Actor(user="system:leak-test"))
            assert token.access_token.get_secret_value() == provider.issued_access_tokens[-1]
            assert token.rotated
        link = await client.get(f"/v1/bank_links/{created['id']}", headers=merchant.headers)
        assert link.json()["status"] == "active"

    # Positive controls: the secret holds the newest refresh token; the captures did capture.
    name = f"leaktest/{merchant.id}/bank_links/{created['id']}/refresh_token"
    current = secretsmanager.get_secret_value(SecretId=name)["SecretString"]
    assert provider.issued_refresh_tokens[-1] in current
    assert len(secretsmanager.list_secret_version_ids(SecretId=name)["Versions"]) == 3
    rows = await database_text(aws_runtime)
    assert created["id"] in rows
    assert "leak-hunt-user" in rows
    assert any(created["id"] in line for line in all_logs.lines)
    assert any("bank_links/callback" not in body and created["id"] in body for body in bodies)
    events = await audit_payloads(aws_runtime, "p->'resource'->>'id' = $1", created["id"])
    assert [e["action"] for e in events] == [
        "bank_link.created",
        "bank_link.completed",
        "bank_link.callback_refused",
        "bank_link.refreshed",
        "bank_link.refreshed",
    ]

    state = httpx.URL(created["authorize_url"]).params["state"]
    code = httpx.URL(location).params["code"]
    secrets_seen = provider.issued_access_tokens + provider.issued_refresh_tokens
    assert len(secrets_seen) >= 6
    for secret in [*secrets_seen, provider.client_secret]:
        assert secret not in rows
        assert not [line.split(" ")[0] for line in all_logs.lines if secret in line]
        assert not [body for body in bodies if secret in body]
        assert secret not in str(events)
    for one_time in (state, code):  # the state is stored only as a digest, the code not at all
        assert one_time not in rows
        assert one_time not in str(events)
