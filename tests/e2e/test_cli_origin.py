"""Every audited CLI action records where it came from: the host it ran on, and the OS user, run as
an operator would (subprocesses). A database of its own, so the trail holds only this module's events.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import make_settings, scratch_database
from tests.factories import charge_body, create_merchant, fetch_rows, post_charge
from tests.fakes.oauth_provider import REDIRECT_URI, FakeOAuthProvider, banking_settings
from tests.integration.served_payorch import environment

from payorch.app import create_app
from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage import events as events_repo
from payorch.storage import webhooks as webhooks_repo

pytestmark = pytest.mark.e2e

PAYORCH = str(Path(sys.executable).with_name("payorch"))
HOST = socket.gethostname()


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    with scratch_database("payorch_cliorigin", partitions=2) as url:
        yield url


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def settings(own_database: str, provider: FakeOAuthProvider, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("cli-origin")
    secrets = {"local_directory": str(data / "secrets")}
    return make_settings(
        own_database,
        data_dir=data,
        audit={"local": {"directory": str(data / "audit")}},
        banking=banking_settings(provider, secrets_config=secrets),
    )


@pytest.fixture(scope="module")
def cli_env(settings: Settings, own_database: str) -> dict[str, str]:
    provider = settings.banking.provider
    assert provider is not None
    provider_json = {**provider.model_dump(mode="json"), "client_secret": provider.client_secret.get_secret_value()}
    return environment(
        own_database,
        settings.data_dir,
        {
            "PAYORCH_DATA_DIR": str(settings.data_dir),
            "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(settings.data_dir / "audit"),
            "PAYORCH_BANKING__PROVIDER": json.dumps(provider_json),
            "PAYORCH_BANKING__SECRETS__LOCAL_DIRECTORY": str(settings.banking.secrets.local_directory),
            "USER": "operator",
            "LOGNAME": "operator",
        },
    )


@pytest.fixture(scope="module")
async def app(settings: Settings, own_database: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = await Runtime.build(settings, own_database)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
        yield runtime, client
    await runtime.aclose()


def payorch(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PAYORCH, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"payorch {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


async def last_event(runtime: Runtime, action: str) -> dict[str, Any]:
    rows = await fetch_rows(
        runtime.db,
        "SELECT p FROM (SELECT 0 AS part, seq, canonical::jsonb->'event' AS p FROM audit_chain "
        "UNION ALL SELECT 1 AS part, seq, payload AS p FROM audit_outbox) e "
        "WHERE p->>'action' = $1 ORDER BY part DESC, seq DESC LIMIT 1",
        action,
    )
    assert rows, f"no {action} event"
    event: dict[str, Any] = rows[0]["p"]
    return event


def assert_from_this_host(event: dict[str, Any]) -> None:
    assert event["origin"]["host"] == HOST, event
    assert event["details"]["host"] == HOST, event
    assert event["actor"]["user"] == "cli:operator", event


async def a_delivery(runtime: Runtime, client: httpx.AsyncClient) -> str:
    """A webhook delivery to a live endpoint, queued as the dispatcher queues them."""
    merchant = await create_merchant(runtime)
    async with runtime.db.transaction() as transaction:
        endpoint = await webhooks_repo.insert_endpoint(
            transaction,
            endpoint_id=new_id("whe"),
            merchant_id=merchant.id,
            livemode=False,
            url="https://merchant.example/hooks",
            enabled_events=["*"],
            description=None,
            secret_ciphertext=b"not used: nothing is sent in this test",
        )
    assert (await post_charge(client, merchant, charge_body())).status_code == 201
    async with runtime.db.connection() as connection:
        await events_repo.fan_out(connection, limit=1000, retry_window_seconds=3600)
    rows = await fetch_rows(runtime.db, "SELECT id FROM webhook_deliveries WHERE endpoint_id = $1", endpoint.id)
    return str(rows[0]["id"])


async def an_active_bank_link(runtime: Runtime, client: httpx.AsyncClient, provider: FakeOAuthProvider) -> str:
    merchant = await create_merchant(runtime)
    created = await client.post("/v1/bank_links", json={"user_reference": "u-1"}, headers=merchant.headers)
    assert created.status_code == 201, created.text
    location = await provider.consent(created.json()["authorize_url"])
    assert location.startswith(REDIRECT_URI + "?")
    assert (await client.get(location.removeprefix("http://payorch.test"))).status_code == 303
    return str(created.json()["id"])


async def test_every_cli_action_records_its_host(
    app: tuple[Runtime, httpx.AsyncClient], cli_env: dict[str, str], provider: FakeOAuthProvider
) -> None:
    runtime, client = app
    merchant_id = payorch(cli_env, "merchants", "create", "--name", "Origin Ltd").strip()
    assert_from_this_host(await last_event(runtime, "merchant.created"))
    key_id = payorch(cli_env, "keys", "create", "--merchant", merchant_id).split()[0]
    assert_from_this_host(await last_event(runtime, "api_key.created"))
    payorch(cli_env, "keys", "revoke", key_id)
    assert_from_this_host(await last_event(runtime, "api_key.revoked"))

    delivery = await a_delivery(runtime, client)
    payorch(cli_env, "webhooks", "redeliver", delivery)
    redelivered = await last_event(runtime, "webhook_endpoint.updated")
    assert redelivered["details"]["redelivered"] == delivery
    assert_from_this_host(redelivered)

    link = await an_active_bank_link(runtime, client, provider)
    payorch(cli_env, "bank-links", "refresh", link)
    refreshed = await last_event(runtime, "bank_link.refreshed")
    assert refreshed["resource"]["id"] == link
    assert_from_this_host(refreshed)

    payorch(cli_env, "reconcile")
    assert_from_this_host(await last_event(runtime, "reconciler.run"))
    payorch(cli_env, "migrate")
    assert_from_this_host(await last_event(runtime, "database.migrated"))
    payorch(cli_env, "audit", "verify", "--sink", "local")
    verified = await last_event(runtime, "audit_trail.verified")
    assert verified["details"]["sinks"] == {"local": "ok"}
    assert_from_this_host(verified)
