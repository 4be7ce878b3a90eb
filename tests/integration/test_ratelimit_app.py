"""Rate limiting through the real payorch app: Runtime-built limiter (Redis or in process), the
middleware order (request id outside, idempotency inside), per-route budgets, per-merchant
overrides, trusted-proxy client IPs reaching the audit trail, and Redis going away."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from tests.conftest import make_settings
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query
from tests.integration.redis_cluster import redis_cluster, redis_server

from payorch.app import create_app
from payorch.runtime import Runtime


def _client_ip() -> str:
    """Each test is its own client, so no test spends another's per-IP budget (Redis is shared)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


def _limits(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "enabled": True,
        "key_limit": {"requests": 5, "window_seconds": 60},
        "ip_limit": {"requests": 1000, "window_seconds": 60},
        # Generous, so a loaded test machine never turns a slow Redis answer into an in-process one.
        "redis_timeout_ms": 2000,
        "routes": {
            "POST /v1/charges": {"name": "charges_create", "limit": {"requests": 2, "window_seconds": 60}},
        },
    }
    config.update(overrides)
    return config


@asynccontextmanager
async def served(
    database_url: str, *, peer: str | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    built = await Runtime.build(make_settings(database_url, **settings), database_url)
    app = create_app(built.settings, runtime=built)
    transport = httpx.ASGITransport(app=app, client=(peer or _client_ip(), 40000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
            yield http, built
    finally:
        await built.aclose()


async def _wait_for(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


def _policies(response: httpx.Response) -> dict[str, str]:
    """``"ip";q=1000;w=60, "default";q=5;w=60`` -> {"ip": "q=1000;w=60", "default": "q=5;w=60"}."""
    members = [m.strip() for m in response.headers["RateLimit-Policy"].split(",")]
    return {m.split(";", 1)[0].strip('"'): m.split(";", 1)[1] for m in members}


def _remaining(response: httpx.Response, policy: str) -> int:
    for member in response.headers["RateLimit"].split(","):
        name, *params = member.strip().split(";")
        if name.strip('"') == policy:
            return int(dict(p.split("=") for p in params)["r"])
    raise AssertionError(f"no {policy} in {response.headers['RateLimit']}")


@pytest.fixture
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


async def test_normal_responses_carry_ratelimit_fields_and_a_refusal_is_the_429_envelope(
    database_url: str, redis_url: str, merchant: MerchantFixture
) -> None:
    async with served(database_url, redis_url=redis_url, ratelimit=_limits()) as (client, runtime):
        assert runtime.redis is not None
        answers = [await client.get("/v1/charges", headers=merchant.headers) for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert _policies(answers[0]) == {"ip": "q=1000;w=60", "default": "q=5;w=60"}
        assert [_remaining(a, "default") for a in answers] == [4, 3, 2, 1, 0]

        refused = await client.get("/v1/charges", headers=merchant.headers)
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error"
        assert error["code"] == "rate_limited"
        # One request id: the header the outermost layer set is the one the body names.
        assert refused.headers["Request-Id"] == error["request_id"]
        assert refused.headers["Request-Id"].startswith("req_")
        assert len(refused.headers.get_list("Request-Id")) == 1
        assert _remaining(refused, "default") == 0
        # Liveness and readiness are never limited.
        assert (await client.get("/readyz")).status_code == 200


async def test_charge_creation_has_a_tighter_budget_than_reads(
    database_url: str, redis_url: str, merchant: MerchantFixture
) -> None:
    async with served(database_url, redis_url=redis_url, ratelimit=_limits()) as (client, _):
        created = [await post_charge(client, merchant, charge_body()) for _ in range(2)]
        assert [c.status_code for c in created] == [201, 201]
        assert _policies(created[0])["charges_create"] == "q=2;w=60"
        third = await post_charge(client, merchant, charge_body())
        assert third.status_code == 429
        assert third.json()["error"]["type"] == "rate_limit_error"
        # Reads draw on the key's own default budget, untouched by the charges.
        read = await client.get(f"/v1/charges/{created[0].json()['id']}", headers=merchant.headers)
        assert read.status_code == 200
        assert _remaining(read, "default") == 4
        listed = await client.get("/v1/charges", headers=merchant.headers)
        assert {c["id"] for c in listed.json()["data"]} == {c.json()["id"] for c in created}


async def test_limiting_runs_before_idempotency_so_a_replay_still_counts(
    database_url: str, redis_url: str, merchant: MerchantFixture
) -> None:
    async with served(database_url, redis_url=redis_url, ratelimit=_limits()) as (client, _):
        key = f"idem-{uuid.uuid4().hex}"
        first = await post_charge(client, merchant, charge_body(), key=key)
        replay = await post_charge(client, merchant, charge_body(), key=key)
        assert (first.status_code, replay.status_code) == (201, 201)
        assert replay.content == first.content
        assert _remaining(replay, "charges_create") == 0
        # The budget (2) is spent by one charge and its replay: the next replay is refused.
        again = await post_charge(client, merchant, charge_body(), key=key)
        assert again.status_code == 429
        listed = await client.get("/v1/charges", headers=merchant.headers)
        assert [c["id"] for c in listed.json()["data"]] == [first.json()["id"]]


async def test_a_merchant_override_replaces_the_default_budgets(
    database_url: str, redis_url: str, runtime: Runtime
) -> None:
    generous, ordinary = await create_merchant(runtime), await create_merchant(runtime)
    overrides = {
        generous.id: {
            "key_limit": {"requests": 8, "window_seconds": 60},
            "routes": {"charges_create": {"requests": 4, "window_seconds": 60}},
        }
    }
    settings: dict[str, Any] = {
        "redis_url": redis_url,
        "ratelimit": _limits(merchant_overrides=overrides),
        "api": {"api_key_cache_seconds": 5},
    }
    async with served(database_url, **settings) as (client, _):
        generous_reads = [await client.get("/v1/charges", headers=generous.headers) for _ in range(8)]
        assert {r.status_code for r in generous_reads} == {200}
        assert _policies(generous_reads[0])["default"] == "q=8;w=60"
        assert (await client.get("/v1/charges", headers=generous.headers)).status_code == 429

        generous_charges = [await post_charge(client, generous, charge_body()) for _ in range(4)]
        assert {c.status_code for c in generous_charges} == {201}
        assert (await post_charge(client, generous, charge_body())).status_code == 429

        ordinary_reads = [await client.get("/v1/charges", headers=ordinary.headers) for _ in range(6)]
        assert [r.status_code for r in ordinary_reads] == [200] * 5 + [429]
        assert _policies(ordinary_reads[0])["default"] == "q=5;w=60"


async def test_trusted_proxy_client_ip_reaches_the_audit_origin(database_url: str, merchant: MerchantFixture) -> None:
    settings = {"ratelimit": _limits(trusted_proxies="10.0.0.0/8")}
    async with served(database_url, **settings) as (client, runtime):
        headers = {**merchant.headers, "X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        created = await client.post("/v1/charges", json=charge_body(), headers=headers)
        assert created.status_code == 201
        rows = await query(
            runtime.db,
            "SELECT payload FROM audit_outbox WHERE payload::text LIKE :charge",
            charge=f"%{created.json()['id']}%",
        )
        payloads = [row["payload"] for row in rows]
    assert payloads, "creating a charge writes an audit event"
    # The right-most untrusted hop is the client; the left-most one is the client's own claim.
    assert {p["origin"]["ip"] for p in payloads} == {"203.0.113.7"}
    assert {p["origin"]["request_id"] for p in payloads} == {created.headers["Request-Id"]}


async def test_redis_down_serves_and_limits_in_process_then_resumes(
    database_url: str, merchant: MerchantFixture
) -> None:
    with redis_server() as server:
        settings = {
            "redis_url": server.url,
            "redis_timeout_seconds": 0.5,
            "ratelimit": _limits(fallback_probe_interval_seconds=0.2),
        }
        async with served(database_url, **settings) as (client, runtime):
            assert (await client.get("/v1/charges", headers=merchant.headers)).status_code == 200
            assert (await client.get("/readyz")).json()["checks"] == {"database": "ok", "redis": "ok"}

            server.stop()
            statuses = [(await client.get("/v1/charges", headers=merchant.headers)).status_code for _ in range(6)]
            # Served, and still limited: the in-process limiter gives the key its 5 and refuses the 6th.
            assert statuses == [200] * 5 + [429]
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["checks"]["redis"] == "unavailable"
            assert "redis" in not_ready.json()["message"]
            assert _fallbacks(runtime) >= 12  # two decisions (ip, key) per request

            server.start()

            async def redis_back() -> bool:
                return (await client.get("/readyz")).status_code == 200

            async def limiter_back() -> bool:
                before = _fallbacks(runtime)
                await client.get("/v1/charges")  # unauthenticated: spends only the IP budget
                return _fallbacks(runtime) == before

            await _wait_for(redis_back, "readiness once Redis is back")
            await _wait_for(limiter_back, "the limiter to return to Redis")
            before = _fallbacks(runtime)
            other = await create_merchant(runtime)
            back = [(await client.get("/v1/charges", headers=other.headers)).status_code for _ in range(6)]
            assert back == [200] * 5 + [429]
            assert _fallbacks(runtime) == before
            assert runtime.redis is not None
            assert await runtime.redis.dbsize() >= 2  # the IP's and the key's windows live in Redis again


def _fallbacks(runtime: Runtime) -> float:
    return float(runtime.metrics.ratelimit_fallbacks._value.get())


async def test_the_same_app_limits_on_a_redis_cluster(database_url: str, merchant: MerchantFixture) -> None:
    with redis_cluster() as cluster:
        settings = {"redis_url": cluster.url, "redis_cluster": True, "ratelimit": _limits()}
        async with served(database_url, **settings) as (client, runtime):
            assert (await client.get("/readyz")).json()["checks"] == {"database": "ok", "redis": "ok"}
            statuses = [(await client.get("/v1/charges", headers=merchant.headers)).status_code for _ in range(6)]
            assert statuses == [200] * 5 + [429]
            assert _fallbacks(runtime) == 0
