"""Merchants' gateway credentials in production (docs/routing.md, "Secrets at rest"): sealed with AWS
KMS, never silently with a local key file. Without KMS, connecting an account or giving it new
credentials is a 503 ``kms_not_configured`` that names the setting, before any gateway is called,
and accounts sealed earlier keep working; ``accounts.allow_local_key`` opts into the local key."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.conftest import own_app
from tests.factories import MerchantFixture, create_merchant, query
from tests.fakes.stripe_server import StripeFake
from tests.integration.accounts_support import charge, connect, kms_key, kms_settings, moto_kms

from payorch.accounts.crypto import SealingRefused
from payorch.runtime import Runtime


@asynccontextmanager
async def production(
    database_url: str, data_dir: Path, **accounts: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with own_app(
        database_url,
        environment="production",
        data_dir=str(data_dir),
        webhooks={"secret_key": Fernet.generate_key().decode()},
        accounts=accounts,
    ) as built:
        yield built


async def refused(client: httpx.AsyncClient, merchant: MerchantFixture, body: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post("/v1/gateway_accounts", json=body, headers=merchant.headers)
    assert answer.status_code == 503, answer.text
    error: dict[str, Any] = answer.json()["error"]
    return error


async def test_production_without_kms_refuses_to_seal_and_names_the_setting(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="payorch.accounts")
    with StripeFake() as stripe:
        async with production(database_url, tmp_path, allowed_base_urls=[stripe.url]) as (runtime, client):
            merchant = await create_merchant(runtime)
            error = await refused(client, merchant, {"gateway": "sandbox", "name": "own"})
            assert (error["type"], error["code"]) == ("api_error", "kms_not_configured")
            assert "PAYORCH_ACCOUNTS__KMS__KEY_ID" in error["message"]
            assert "Nothing was stored" in error["message"]
            # Refused before the gateway is asked to verify anything.
            calls = stripe.request_count
            body = {"gateway": "stripe", "name": "s", "verify": True,
                    "credentials": {"api_key": stripe.api_key, "base_url": stripe.url}}  # fmt: skip
            assert (await refused(client, merchant, body))["code"] == "kms_not_configured"
            assert stripe.request_count == calls
            listed = await client.get("/v1/gateway_accounts", headers=merchant.headers)
            assert listed.json()["data"] == []
            assert not (tmp_path / "account_keys").exists()  # no key file was made to seal with
            with pytest.raises(SealingRefused):
                await runtime.accounts.rotate()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("PAYORCH_ACCOUNTS__KMS__KEY_ID" in message for message in warnings)


async def test_accounts_sealed_before_keep_charging_and_can_be_disabled(database_url: str, tmp_path: Path) -> None:
    async with own_app(database_url, data_dir=str(tmp_path)) as (runtime, client):  # development: local key
        merchant = await create_merchant(runtime)
        account = await connect(client, merchant, "sandbox", "legacy")
    async with production(database_url, tmp_path) as (runtime, client):
        charged = await charge(client, merchant, {"legacy": "tok_visa"})
        assert charged.status_code == 201, charged.text
        assert charged.json()["gateway"] == account["id"]
        path = f"/v1/gateway_accounts/{account['id']}"
        new_credentials = await client.post(path, json={"credentials": {}}, headers=merchant.headers)
        assert new_credentials.status_code == 503
        assert new_credentials.json()["error"]["code"] == "kms_not_configured"
        # Turning an account off never needs the key service: an operator can always stop charges on it.
        disabled = await client.post(path, json={"enabled": False, "name": "legacy_off"}, headers=merchant.headers)
        assert disabled.status_code == 200, disabled.text
        assert (disabled.json()["enabled"], disabled.json()["name"]) == (False, "legacy_off")
        assert disabled.json()["credentials"] == account["credentials"]


async def test_allow_local_key_opts_into_the_local_key_and_says_it_is_not_for_production(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="payorch.accounts")
    async with production(database_url, tmp_path, allow_local_key=True) as (runtime, client):
        merchant = await create_merchant(runtime)
        account = await connect(client, merchant, "sandbox", "local")
        assert (await charge(client, merchant, {"local": "tok_visa"})).status_code == 201
        (row,) = await query(runtime.db, "SELECT wrap_key_id FROM gateway_accounts WHERE id = :id", id=account["id"])
    assert row["wrap_key_id"].startswith("local:")
    assert any("not for production" in r.getMessage() for r in caplog.records)


async def test_production_with_kms_seals_with_it(database_url: str, tmp_path: Path) -> None:
    with moto_kms() as url:
        key = kms_key(url)
        async with production(database_url, tmp_path, **kms_settings(url, key)) as (runtime, client):
            merchant = await create_merchant(runtime)
            account = await connect(client, merchant, "sandbox", "sealed")
            assert (await charge(client, merchant, {"sealed": "tok_visa"})).status_code == 201
            sql = "SELECT wrap_key_id FROM gateway_accounts WHERE id = :id"
            (row,) = await query(runtime.db, sql, id=account["id"])
    assert row["wrap_key_id"] == key
    assert not (tmp_path / "account_keys").exists()
