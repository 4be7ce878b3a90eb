"""The webhook endpoint API: create (secret once), list, read, delete, rotate; live-mode URL rules."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import own_app
from tests.factories import MerchantFixture, create_merchant, fetch_rows

from payorch.runtime import Runtime

ENDPOINTS = "/v1/webhook_endpoints"


async def _create(client: httpx.AsyncClient, merchant: MerchantFixture, **body: object) -> httpx.Response:
    payload = {"url": "http://93.184.216.34:9/hooks", "enabled_events": ["charge.succeeded"], **body}
    return await client.post(ENDPOINTS, json=payload, headers=merchant.headers)


async def test_create_shows_the_secret_once_and_stores_it_encrypted(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    merchant = await create_merchant(runtime)
    created = await _create(client, merchant, enabled_events=["charge.succeeded", "charge.failed"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["object"] == "webhook_endpoint"
    assert body["id"].startswith("whe_")
    assert body["secret"].startswith("whsec_")
    assert body["enabled_events"] == ["charge.failed", "charge.succeeded"]
    assert body["livemode"] is False

    fetched = await client.get(f"{ENDPOINTS}/{body['id']}", headers=merchant.headers)
    assert fetched.status_code == 200
    assert fetched.json()["secret"] is None
    listed = await client.get(ENDPOINTS, headers=merchant.headers)
    assert [e["id"] for e in listed.json()["data"]] == [body["id"]]
    assert all(e["secret"] is None for e in listed.json()["data"])

    ((stored,),) = await fetch_rows(
        runtime.db, "SELECT secret_ciphertext FROM webhook_endpoints WHERE merchant_id = $1", merchant.id
    )
    assert body["secret"].encode() not in bytes(stored)
    assert body["secret"].removeprefix("whsec_").encode() not in bytes(stored)


async def test_rotation_returns_a_new_secret_with_an_overlap(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    created = (await _create(client, merchant)).json()
    rotated = await client.post(
        f"{ENDPOINTS}/{created['id']}/rotate_secret", json={"expires_in_seconds": 3600}, headers=merchant.headers
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["previous_secret_expires"] >= created["created"] + 3500
    without_body = await client.post(f"{ENDPOINTS}/{created['id']}/rotate_secret", headers=merchant.headers)
    assert without_body.status_code == 200, without_body.text


async def test_delete_then_it_is_gone(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    created = (await _create(client, merchant)).json()
    deleted = await client.delete(f"{ENDPOINTS}/{created['id']}", headers=merchant.headers)
    assert deleted.status_code == 200
    assert (await client.get(f"{ENDPOINTS}/{created['id']}", headers=merchant.headers)).status_code == 404
    assert (await client.delete(f"{ENDPOINTS}/{created['id']}", headers=merchant.headers)).status_code == 404
    assert (await client.get(ENDPOINTS, headers=merchant.headers)).json()["data"] == []


async def test_another_merchant_or_mode_sees_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    owner, other = await create_merchant(runtime), await create_merchant(runtime)
    created = (await _create(client, owner)).json()
    for headers in (other.headers, owner.live_headers):
        response = await client.get(f"{ENDPOINTS}/{created['id']}", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert (await client.delete(f"{ENDPOINTS}/{created['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"{ENDPOINTS}/{created['id']}", headers=owner.headers)).status_code == 200


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34/hooks", "https"),
        ("https://127.0.0.1/hooks", "public"),
        ("https://10.1.2.3/hooks", "public"),
        ("https://169.254.169.254/latest/meta-data", "public"),
        ("https://[::1]/hooks", "public"),
        ("https://[::ffff:192.168.1.1]/hooks", "public"),
        ("https://localhost/hooks", "public"),
        ("https://user:pw@93.184.216.34/hooks", "credentials"),
        ("ftp://93.184.216.34/hooks", "http"),
    ],
)
async def test_live_mode_refuses_internal_or_plain_http_urls(
    client: httpx.AsyncClient, runtime: Runtime, url: str, reason: str
) -> None:
    merchant = await create_merchant(runtime)
    response = await client.post(ENDPOINTS, json={"url": url, "enabled_events": ["*"]}, headers=merchant.live_headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "url"
    assert reason in response.json()["error"]["message"]


async def test_live_mode_accepts_a_public_https_url_and_test_mode_loopback_only_by_setting(
    client: httpx.AsyncClient, runtime: Runtime, database_url: str
) -> None:
    """Test mode took loopback unconditionally until issue 18; now only the development setting
    ``webhooks.allow_loopback_endpoints`` allows it (tests/integration/test_webhook_ssrf.py)."""
    merchant = await create_merchant(runtime)
    live = await client.post(
        ENDPOINTS, json={"url": "https://93.184.216.34/hooks", "enabled_events": ["*"]}, headers=merchant.live_headers
    )
    assert live.status_code == 201, live.text
    assert live.json()["livemode"] is True
    assert (await _create(client, merchant, url="http://localhost:8080/hooks")).status_code == 400
    async with own_app(database_url, webhooks={"allow_loopback_endpoints": True}) as (_, local):
        assert (await _create(local, merchant, url="http://localhost:8080/hooks")).status_code == 201


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://93.184.216.34/h", "enabled_events": []},
        {"url": "http://93.184.216.34/h", "enabled_events": ["charge.exploded"]},
        {"url": "http://93.184.216.34/h", "enabled_events": ["*", "charge.succeeded"]},
        {"url": "not a url", "enabled_events": ["*"]},
        {"url": "http://93.184.216.34/h", "enabled_events": ["*"], "extra": 1},
        {"enabled_events": ["*"]},
    ],
)
async def test_bad_input_is_a_400_envelope(
    client: httpx.AsyncClient, runtime: Runtime, body: dict[str, object]
) -> None:
    merchant = await create_merchant(runtime)
    response = await client.post(ENDPOINTS, json=body, headers=merchant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_endpoints_need_an_api_key(client: httpx.AsyncClient) -> None:
    assert (await client.get(ENDPOINTS)).status_code == 401
    assert (
        await client.post(ENDPOINTS, json={"url": "http://127.0.0.1/h", "enabled_events": ["*"]})
    ).status_code == 401
