"""Shared by the gateway-account and routing tests: each fake's credentials as an account takes them,
connecting an account and charging through the API, a KMS (moto's server) to wrap data keys with,
and (a plugin of tests/conftest.py) the fixtures ``gateway_fakes`` and ``accounts_app``: the three
gateway fakes and an app whose accounts may name them, one of each per test module."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from tests.conftest import own_app
from tests.factories import MerchantFixture
from tests.integration.orchestration_support import Fakes, adyen_token, closed_port, running_fakes

from payorch.runtime import Runtime

UNREACHABLE = f"http://127.0.0.1:{closed_port()}"
"""A gateway host nothing listens on, which ``accounts_app``'s accounts may name too."""


def allowed(fakes: Fakes, *more: str) -> dict[str, Any]:
    """``accounts`` settings letting accounts name the fakes (and ``more`` hosts) as their base_url."""
    return {"allowed_base_urls": [fakes.stripe.url, fakes.braintree.url, fakes.adyen.base_url, *more]}


def credentials(fakes: Fakes, kind: str) -> dict[str, Any]:
    return {
        "stripe": {"api_key": fakes.stripe.api_key, "base_url": fakes.stripe.url},
        "braintree": {
            "merchant_account": fakes.braintree.merchant_id,
            "public_key": fakes.braintree.public_key,
            "private_key": fakes.braintree.private_key,
            "base_url": fakes.braintree.url,
        },
        "adyen": {
            "api_key": fakes.adyen.api_key,
            "merchant_account": fakes.adyen.merchant_account,
            "base_url": fakes.adyen.base_url,
        },
        "sandbox": {},
    }[kind]


@pytest.fixture(scope="module")
def gateway_fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(scope="module")
async def accounts_app(
    database_url: str, gateway_fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """An app of the module's own whose accounts may name the fakes, and ``UNREACHABLE``, as base_url."""
    data_dir = str(tmp_path_factory.mktemp("accounts-app"))
    accounts = allowed(gateway_fakes, UNREACHABLE, f"{UNREACHABLE}/v71")
    async with own_app(database_url, data_dir=data_dir, accounts=accounts) as built:
        yield built


TOKENS = {"stripe": "tok_visa", "braintree": "fake-valid-nonce", "sandbox": "tok_visa"}


def token_for(kind: str) -> str:
    return adyen_token() if kind == "adyen" else TOKENS[kind]


async def connect(
    client: httpx.AsyncClient, merchant: MerchantFixture, kind: str, name: str, **fields: Any
) -> dict[str, Any]:
    body = {"gateway": kind, "name": name, **fields}
    response = await client.post("/v1/gateway_accounts", json=body, headers=merchant.headers)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = response.json()
    return account


async def charge(
    client: httpx.AsyncClient, merchant: MerchantFixture, tokens: dict[str, str], **extra: Any
) -> httpx.Response:
    body = {"amount": 1200, "currency": "usd", "payment_method": {"tokens": tokens}, **extra}
    return await client.post("/v1/charges", json=body, headers=merchant.headers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_kms() -> Iterator[str]:
    """moto's server on a free loopback port: its URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def kms_key(url: str) -> str:
    client = boto3.client(
        "kms", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return str(client.create_key()["KeyMetadata"]["Arn"])


def kms_settings(url: str, key_id: str) -> dict[str, Any]:
    kms = {"key_id": key_id, "endpoint_url": url, "region": "us-east-1", "access_key_id": "testing",
           "secret_access_key": "testing", "connect_timeout_seconds": 2, "read_timeout_seconds": 5}  # fmt: skip
    return {"kms": kms}
