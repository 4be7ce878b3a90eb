"""``success_rate`` routing's statistics in Redis (docs/routing.md), through the API on sandbox accounts:
they outlive the replica that recorded them, and a Redis that is down or hanging makes a charge fall
back to the rule's listed order (said in its recorded decision), never a 5xx, until Redis answers
again. The outage tests run on a redis-server they own (never the shared one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from tests.conftest import own_app
from tests.factories import MerchantFixture, create_merchant
from tests.integration.accounts_support import connect
from tests.integration.orchestration_support import wait_for
from tests.integration.redis_cluster import RedisServer, redis_server

from payorch.runtime import Runtime

# Thompson sampling over 12 approvals against 12 failures puts the failing account first about
# once in three million draws: the order is as good as settled.
OUTCOMES_EACH = 12


@asynccontextmanager
async def replica(database_url: str, redis_url: str, data_dir: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """One API replica: its own Runtime and app, the shared Postgres and the given Redis."""
    async with own_app(
        database_url, data_dir=data_dir, redis_url=redis_url, accounts={"success_rate_exploration": 0}
    ) as built:
        yield built


async def success_rate_merchant(
    client: httpx.AsyncClient, runtime: Runtime, *, flaky_rate: float
) -> tuple[MerchantFixture, str, str]:
    """A merchant with a ``steady`` sandbox account and a ``flaky`` one (approving ``flaky_rate`` of
    its charges), routed by ``success_rate`` with ``flaky`` listed first."""
    merchant = await create_merchant(runtime)
    flaky = await connect(client, merchant, "sandbox", "flaky", credentials={"approval_rate": flaky_rate})
    steady = await connect(client, merchant, "sandbox", "steady")
    rules = {"default": {"strategy": "success_rate", "accounts": [flaky["id"], steady["id"]]}}
    stored = await client.put("/v1/routing", json=rules, headers=merchant.headers)
    assert stored.status_code == 200, stored.text
    return merchant, flaky["id"], steady["id"]


BOTH = {"flaky": "tok_visa", "steady": "tok_visa"}


async def charge(client: httpx.AsyncClient, merchant: MerchantFixture, tokens: dict[str, str]) -> httpx.Response:
    body = {"amount": 1500, "currency": "usd", "payment_method": {"tokens": tokens}}
    return await client.post("/v1/charges", json=body, headers=merchant.headers)


async def evaluate(client: httpx.AsyncClient, merchant: MerchantFixture) -> dict[str, Any]:
    body = {"amount": 1500, "currency": "usd", "payment_method": {"tokens": BOTH}}
    answer = await client.post("/v1/routing/evaluate", json=body, headers=merchant.headers)
    assert answer.status_code == 200, answer.text
    decision: dict[str, Any] = answer.json()
    return decision


async def test_a_second_replica_sees_and_uses_what_the_first_recorded(
    database_url: str, redis_url: str, tmp_path: Any
) -> None:
    async with replica(database_url, redis_url, str(tmp_path)) as (first, client):
        merchant, flaky, steady = await success_rate_merchant(client, first, flaky_rate=0.0)
        # Each charge offers one account only, so each outcome lands on a known account.
        for _ in range(OUTCOMES_EACH):
            declined = await charge(client, merchant, {"flaky": "tok_visa"})
            assert declined.status_code == 402, declined.text
            assert declined.json()["error"]["decline_code"] == "issuer_unavailable"
            approved = await charge(client, merchant, {"steady": "tok_visa"})
            assert approved.status_code == 201, approved.text
        await first.outcomes.drain()
        seen_by_first = (await evaluate(client, merchant))["details"]["observed"]
    assert seen_by_first == {
        flaky: {"approved": 0, "failed": OUTCOMES_EACH},
        steady: {"approved": OUTCOMES_EACH, "failed": 0},
    }

    # The first replica is gone; a new one on the same Redis starts from what it learnt.
    async with replica(database_url, redis_url, str(tmp_path)) as (second, client):
        dry = await evaluate(client, merchant)
        assert dry["details"]["observed"] == seen_by_first
        assert dry["candidates"] == [steady, flaky]
        created = await charge(client, merchant, BOTH)
        assert created.status_code == 201, created.text
        routed = created.json()
        assert routed["gateway"] == steady
        assert routed["routing"]["candidates"] == [steady, flaky]
        assert routed["routing"]["details"]["observed"] == seen_by_first
        await second.outcomes.drain()
        after = (await evaluate(client, merchant))["details"]["observed"]
    assert after[steady] == {"approved": OUTCOMES_EACH + 1, "failed": 0}


@pytest.fixture(scope="module")
def own_redis() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


async def until_back_on_redis(client: httpx.AsyncClient, merchant: MerchantFixture) -> dict[str, Any]:
    """The first dry run that read the statistics again (the store waits a few seconds before it
    asks a Redis that failed)."""

    async def read_again() -> dict[str, Any] | None:
        decision = await evaluate(client, merchant)
        return None if "fallback" in decision["details"] else decision

    found: dict[str, Any] = await wait_for(read_again, timeout=30)
    return found


async def charges_fall_back(
    client: httpx.AsyncClient, merchant: MerchantFixture, listed: list[str], outage: Callable[[], Awaitable[None]]
) -> None:
    """During ``outage``, a charge is routed in the listed order, says so, and succeeds."""
    await outage()
    during = await charge(client, merchant, BOTH)
    assert during.status_code == 201, during.text
    routing = during.json()["routing"]
    assert routing["details"]["fallback"] == "statistics_unavailable"
    assert "observed" not in routing["details"]
    assert routing["candidates"] == listed
    assert during.json()["gateway"] == listed[0]
    stored = await client.get(f"/v1/charges/{during.json()['id']}", headers=merchant.headers)
    assert stored.json()["routing"] == routing


async def test_redis_down_falls_back_to_the_listed_order_and_recovers(
    database_url: str, own_redis: RedisServer, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with replica(database_url, own_redis.url, str(tmp_path)) as (runtime, client):
        merchant, flaky, steady = await success_rate_merchant(client, runtime, flaky_rate=1.0)
        listed = [flaky, steady]
        before = await charge(client, merchant, BOTH)
        assert before.status_code == 201, before.text
        assert "fallback" not in before.json()["routing"]["details"]
        await runtime.outcomes.drain()

        async def stopped() -> None:
            own_redis.stop()

        await charges_fall_back(client, merchant, listed, stopped)
        assert any("success-rate statistics" in record.getMessage() for record in caplog.records)
        readiness = await runtime.ready()
        assert readiness["redis"] == "unavailable"

        own_redis.start()  # empty: this server keeps nothing on disk
        recovered = await until_back_on_redis(client, merchant)
        assert set(recovered["details"]["observed"]) == {flaky, steady}
        after = await charge(client, merchant, BOTH)
        assert after.status_code == 201, after.text
        assert "fallback" not in after.json()["routing"]["details"]
        await runtime.outcomes.drain()
        counted = (await evaluate(client, merchant))["details"]["observed"]
        winner = after.json()["gateway"]
        assert counted[winner]["approved"] == 1  # recorded in Redis again


async def test_a_hanging_redis_is_not_waited_for(database_url: str, own_redis: RedisServer, tmp_path: Any) -> None:
    admin = Redis.from_url(own_redis.url)
    try:
        async with replica(database_url, own_redis.url, str(tmp_path)) as (runtime, client):
            merchant, flaky, steady = await success_rate_merchant(client, runtime, flaky_rate=1.0)
            warmed = await charge(client, merchant, BOTH)  # the connection is open before the pause
            assert "fallback" not in warmed.json()["routing"]["details"]

            async def paused() -> None:
                await admin.client_pause(3000)  # every command of every client hangs meanwhile

            await charges_fall_back(client, merchant, [flaky, steady], paused)
            await until_back_on_redis(client, merchant)
    finally:
        await admin.aclose()
