"""The dispatcher against a merchant endpoint on loopback: signed deliveries, retries with the same
webhook-id, polling without NOTIFY, two dispatchers at once, dead letters and redelivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, fetch_rows, post_charge
from tests.fakes.merchant_endpoint import MerchantEndpoint, verify

from payorch.runtime import Runtime
from payorch.webhooks.dispatcher import Dispatcher

SECRET_KEY = Fernet.generate_key().decode()
FAST = {
    "secret_key": SECRET_KEY,
    "poll_interval_seconds": 0.2,
    "retry_base_seconds": 0.05,
    "retry_max_interval_seconds": 0.2,
    "delivery_timeout_seconds": 3,
    "lease_margin_seconds": 1,
    "allow_loopback_endpoints": True,  # the merchant's endpoint runs on this machine
}


@contextlib.asynccontextmanager
async def _webhook_runtime(database_url: str, **webhooks: Any) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    async with own_app(database_url, webhooks={**FAST, **webhooks}) as (runtime, client):
        yield runtime, client


@contextlib.asynccontextmanager
async def _running(*dispatchers: Dispatcher) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(d.run_forever(stop)) for d in dispatchers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=15)


@pytest.fixture
def endpoint() -> Iterator[MerchantEndpoint]:
    with MerchantEndpoint() as server:
        yield server


async def _subscribe(
    client: httpx.AsyncClient, merchant: MerchantFixture, url: str, events: list[str]
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhook_endpoints", json={"url": url, "enabled_events": events}, headers=merchant.headers
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def _settled(client: httpx.AsyncClient, merchant: MerchantFixture, endpoint_id: str) -> list[dict[str, Any]]:
    """The endpoint's deliveries once none is pending (the dispatcher records after the answer)."""
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        response = await client.get(f"/v1/webhook_endpoints/{endpoint_id}/deliveries", headers=merchant.headers)
        deliveries: list[dict[str, Any]] = response.json()["data"]
        if all(d["status"] != "pending" for d in deliveries) or asyncio.get_running_loop().time() > deadline:
            return deliveries
        await asyncio.sleep(0.05)


async def test_a_charge_is_delivered_signed_per_standard_webhooks(
    database_url: str, endpoint: MerchantEndpoint
) -> None:
    async with _webhook_runtime(database_url) as (runtime, client), _running(runtime.webhooks.dispatcher):
        merchant = await create_merchant(runtime)
        subscription = await _subscribe(client, merchant, endpoint.url, ["charge.succeeded"])
        charge = (await post_charge(client, merchant, charge_body("tok_visa"))).json()
        await post_charge(client, merchant, charge_body("tok_chargeDeclined"))  # not subscribed
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 1)

        (arrival,) = endpoint.arrivals
        event = verify(arrival, subscription["secret"])
        assert event["type"] == "charge.succeeded"
        assert event["object"] == "event"
        assert arrival.webhook_id == event["id"]
        assert event["data"]["object"]["id"] == charge["id"]  # type: ignore[index]
        assert event["data"]["object"]["status"] == "succeeded"  # type: ignore[index]
        assert arrival.headers["webhook-signature"].startswith("v1,")
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "QUJD" * 8).verify(arrival.body, arrival.headers)

        (delivery,) = await _settled(client, merchant, subscription["id"])
        assert delivery["status"] == "succeeded"
        assert delivery["event"] == event["id"]
        assert delivery["attempts"] == 1
        assert delivery["last_status_code"] == 200


async def test_endpoint_down_three_times_then_delivered_once_with_the_same_id(
    database_url: str, endpoint: MerchantEndpoint
) -> None:
    endpoint.fail_next(3)
    async with _webhook_runtime(database_url) as (runtime, client), _running(runtime.webhooks.dispatcher):
        merchant = await create_merchant(runtime)
        subscription = await _subscribe(client, merchant, endpoint.url, ["*"])
        await post_charge(client, merchant, charge_body("tok_visa"))
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 1)
        deliveries = await _settled(client, merchant, subscription["id"])
        await asyncio.sleep(0.5)  # a duplicate would show up in this window; none may

    assert [a.status for a in endpoint.arrivals] == [503, 503, 503, 200]
    assert len({a.webhook_id for a in endpoint.arrivals}) == 1
    for arrival in endpoint.arrivals:
        verify(arrival, subscription["secret"])
    assert deliveries[0]["status"] == "succeeded"
    assert deliveries[0]["attempts"] == 4


async def test_without_notify_deliveries_still_go_out_by_polling(database_url: str, endpoint: MerchantEndpoint) -> None:
    async with _webhook_runtime(database_url, listen=False, poll_interval_seconds=0.3) as (runtime, client):
        dispatcher = runtime.webhooks.dispatcher
        async with _running(dispatcher):
            merchant = await create_merchant(runtime)
            subscription = await _subscribe(client, merchant, endpoint.url, ["charge.succeeded"])
            for _ in range(3):
                await post_charge(client, merchant, charge_body("tok_visa"))
            await endpoint.until(lambda: len(endpoint.acknowledged()) == 3)
            assert not dispatcher.listening.is_set()
    ids = [verify(a, subscription["secret"])["id"] for a in endpoint.arrivals]
    assert len(set(ids)) == 3


async def test_two_dispatchers_never_send_one_delivery_at_once(database_url: str, endpoint: MerchantEndpoint) -> None:
    endpoint.slow(0.05)
    async with _webhook_runtime(database_url, concurrency=4, batch_size=4) as (runtime, client):
        merchant = await create_merchant(runtime)
        await _subscribe(client, merchant, endpoint.url, ["charge.succeeded", "charge.failed"])
        for index in range(12):
            await post_charge(client, merchant, charge_body("tok_visa" if index % 2 else "tok_chargeDeclined"))
        second = Dispatcher(runtime.db, runtime.settings.webhooks, runtime.webhooks.dispatcher._box)
        async with _running(runtime.webhooks.dispatcher, second):
            await endpoint.until(lambda: len(endpoint.acknowledged()) == 12)
            await asyncio.sleep(0.5)
    assert endpoint.max_open_same_id == 1
    ids = [a.webhook_id for a in endpoint.arrivals]
    assert len(ids) == len(set(ids)) == 12


async def test_rotation_signs_with_both_secrets_during_the_overlap(
    database_url: str, endpoint: MerchantEndpoint
) -> None:
    async with _webhook_runtime(database_url) as (runtime, client), _running(runtime.webhooks.dispatcher):
        merchant = await create_merchant(runtime)
        subscription = await _subscribe(client, merchant, endpoint.url, ["charge.succeeded"])
        rotated = await client.post(
            f"/v1/webhook_endpoints/{subscription['id']}/rotate_secret",
            json={"expires_in_seconds": 3600},
            headers=merchant.headers,
        )
        await post_charge(client, merchant, charge_body("tok_visa"))
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 1)
    (arrival,) = endpoint.arrivals
    assert len(arrival.headers["webhook-signature"].split(" ")) == 2
    verify(arrival, subscription["secret"])
    verify(arrival, rotated.json()["secret"])


async def test_dead_lettered_delivery_is_redelivered_by_hand(database_url: str, endpoint: MerchantEndpoint) -> None:
    endpoint.fail_next(1000, status=500)
    async with _webhook_runtime(database_url) as (runtime, client), _running(runtime.webhooks.dispatcher):
        merchant = await create_merchant(runtime)
        subscription = await _subscribe(client, merchant, endpoint.url, ["charge.succeeded"])
        await post_charge(client, merchant, charge_body("tok_visa"))
        await endpoint.until(lambda: len(endpoint.arrivals) >= 2)
        # the 24-hour window, run out
        await fetch_rows(
            runtime.db, "UPDATE webhook_deliveries SET give_up_after = now() WHERE merchant_id = $1", merchant.id
        )
        listing = f"/v1/webhook_endpoints/{subscription['id']}/deliveries"

        async def status() -> str:
            return str((await client.get(listing, headers=merchant.headers)).json()["data"][0]["status"])

        deadline = asyncio.get_running_loop().time() + 20
        while await status() != "failed":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        dead = (await client.get(listing, headers=merchant.headers)).json()["data"][0]
        assert dead["last_status_code"] == 500
        assert dead["next_attempt"] is None
        tried = len(endpoint.arrivals)

        endpoint.fail_next(0)
        redelivered = await client.post(f"{listing}/{dead['id']}/redeliver", headers=merchant.headers)
        assert redelivered.status_code == 200, redelivered.text
        assert redelivered.json()["status"] == "pending"
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 1)
        assert (await _settled(client, merchant, subscription["id"]))[0]["status"] == "succeeded"
        missing = await client.post(f"{listing}/whd_{'0' * 26}/redeliver", headers=merchant.headers)
        assert missing.status_code == 404
    assert len(endpoint.arrivals) == tried + 1
    assert len({a.webhook_id for a in endpoint.arrivals}) == 1


async def test_backoff_grows_with_jitter_and_stops_at_the_window(database_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    async with _webhook_runtime(database_url, retry_base_seconds=10, retry_max_interval_seconds=3600) as (runtime, _):
        dispatcher = runtime.webhooks.dispatcher
        now = datetime.now(UTC)
        window = now + timedelta(hours=24)
        delays = [(dispatcher.next_attempt_at(n, window, now) - now).total_seconds() for n in (1, 2, 3, 12, 40)]  # type: ignore[operator]
        assert 5 <= delays[0] <= 10
        assert 10 <= delays[1] <= 20
        assert 20 <= delays[2] <= 40
        assert 1800 <= delays[3] <= 3600
        assert 1800 <= delays[4] <= 3600
        assert dispatcher.next_attempt_at(5, now + timedelta(seconds=1), now) == now + timedelta(seconds=1)
        assert dispatcher.next_attempt_at(5, now, now) is None
