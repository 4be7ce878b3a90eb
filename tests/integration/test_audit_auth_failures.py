"""Failed authentications leave audit events (PCI DSS 10.2.1.4), bounded in volume: per key prefix
and client IP and window, the first at once and the rest as one summary with its count.

Each test calls from addresses of its own (the windows are per IP), through an app of its own."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Any

import httpx
from tests.conftest import make_settings, own_app
from tests.factories import create_merchant, fetch_rows
from tests.integration.audit_sinks_support import counter, wait_for

from payorch.app import create_app
from payorch.audit.auth_failures import AuthFailureAudit, FailedAuthentication
from payorch.audit.config import RefusalAuditConfig
from payorch.audit.events import Origin
from payorch.audit.failure_windows import RedisWindows
from payorch.audit.refusals import RefusalAudit
from payorch.runtime import Runtime, connect_redis
from payorch.storage import merchants as merchants_repo

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def fresh_ip() -> str:
    return f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def random_key(mode: str = "test") -> str:
    return f"sk_{mode}_" + "".join(secrets.choice(ALPHABET) for _ in range(44))


async def events_from(runtime: Runtime, ip: str) -> list[dict[str, Any]]:
    """Every audit event whose origin is ``ip``, chained or still in the outbox."""
    chained = await fetch_rows(
        runtime.db, "SELECT canonical FROM audit_chain WHERE strpos(canonical, $1) > 0 ORDER BY seq", f'"{ip}"'
    )
    pending = await fetch_rows(
        runtime.db, "SELECT payload FROM audit_outbox WHERE payload->'origin'->>'ip' = $1 ORDER BY seq", ip
    )
    events = [json.loads(row["canonical"])["event"] for row in chained] + [row["payload"] for row in pending]
    return [event for event in events if event["origin"].get("ip") == ip]


def counted(events: list[dict[str, Any]]) -> int:
    return sum(int(event["details"]["count"]) for event in events)


async def call_from(runtime: Runtime, ip: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=create_app(runtime.settings, runtime=runtime), client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
        return await client.get("/v1/charges", headers=headers)


async def test_every_kind_of_refused_key_writes_one_event(database_url: str) -> None:
    async with own_app(database_url) as (runtime, _):
        merchant = await create_merchant(runtime)
        revoked = await create_merchant(runtime)
        async with runtime.db.transaction() as transaction:
            await merchants_repo.revoke_api_key(transaction, revoked.key_id)
        wrong_secret = merchant.key[:-4] + ("AAAA" if not merchant.key.endswith("AAAA") else "BBBB")
        unknown = random_key("live")
        cases = {
            "missing": ({}, "missing", None),
            "malformed": ({"Authorization": "Bearer not-a-key"}, "malformed", None),
            "unknown_key": ({"Authorization": f"Bearer {unknown}"}, f"live:{unknown[8:20]}", None),
            "invalid_secret": ({"Authorization": f"Bearer {wrong_secret}"}, f"test:{merchant.key[8:20]}", merchant),
            "revoked": (revoked.headers, f"test:{revoked.key[8:20]}", revoked),
        }
        for reason, (headers, prefix, owner) in cases.items():
            ip = fresh_ip()
            response = await call_from(runtime, ip, headers)
            assert response.status_code == 401, reason
            [event] = await events_from(runtime, ip)
            assert event["action"] == "authentication.failed", reason
            assert event["outcome"] == "failure"
            assert event["origin"] == {"ip": ip, "request_id": response.headers["Request-Id"]}
            assert event["details"]["reason"] == reason
            assert event["details"]["key_prefix"] == prefix
            assert event["details"]["count"] == 1
            assert event["actor"]["user"] == "anonymous:api"
            if owner is None:
                assert event["actor"]["merchant_id"] is None
                assert event["resource"] == {"type": "api_key", "id": prefix}
            else:
                assert event["actor"]["merchant_id"] == owner.id
                assert event["resource"] == {"type": "api_key", "id": owner.key_id}
            stored = json.dumps(event)
            for secret in (merchant.key, wrong_secret, unknown, revoked.key):
                assert secret[20:] not in stored, f"a key's secret reached the trail ({reason})"


async def test_500_bad_key_requests_from_one_ip_write_a_bounded_number_of_events(database_url: str) -> None:
    ip = fresh_ip()
    bad = {"Authorization": f"Bearer {random_key()}"}
    async with own_app(database_url, peer=(ip, 40001)) as (runtime, client):
        for _ in range(10):
            answers = await asyncio.gather(*(client.get("/v1/charges", headers=bad) for _ in range(50)))
            assert {answer.status_code for answer in answers} == {401}
        first = await events_from(runtime, ip)
        assert [event["action"] for event in first] in (
            ["authentication.failed"],
            ["authentication.failed", "authentication.failed"],  # the flood crossed a minute
        )
        await runtime.auth_failures.flush(everything=True)
        events = await events_from(runtime, ip)
    summaries = [event for event in events if event["action"] == "authentication.failures"]
    assert 2 <= len(events) <= 4
    assert summaries
    assert counted(events) == 500
    for summary in summaries:
        assert summary["details"]["window_total"] == summary["details"]["count"] + 1
        assert summary["details"]["key_prefix"] == f"test:{bad['Authorization'][15:27]}"
        assert summary["details"]["first_request_id"]
        assert summary["outcome"] == "failure"


async def test_a_flood_of_random_keys_is_bounded_by_the_per_ip_key_budget(database_url: str) -> None:
    ip = fresh_ip()
    async with own_app(database_url, peer=(ip, 40002)) as (runtime, client):
        budget = runtime.settings.audit.refusals.keys_per_ip
        for _ in range(6):
            keys = [random_key() for _ in range(50)]
            answers = await asyncio.gather(
                *(client.get("/v1/charges", headers={"Authorization": f"Bearer {key}"}) for key in keys)
            )
            assert {answer.status_code for answer in answers} == {401}
        await runtime.auth_failures.flush(everything=True)
        events = await events_from(runtime, ip)
    assert len(events) <= 2 * 2 * (budget + 1)  # at most two windows, each first + summary per prefix
    assert counted(events) == 300
    assert any(event["details"].get("counted_as") == "*" for event in events)
    assert any(
        event["details"]["key_prefix"] == "*" for event in events if event["action"] == "authentication.failures"
    )


async def test_the_summary_is_written_once_its_window_closes(database_url: str) -> None:
    ip = fresh_ip()
    refusals = {"window_seconds": 1, "flush_interval_seconds": 0.1}
    async with own_app(database_url, peer=(ip, 40003), audit={"refusals": refusals}) as (runtime, client):
        for _ in range(30):
            assert (await client.get("/v1/charges", headers={"Authorization": "Bearer x"})).status_code == 401

        async def all_counted() -> bool:
            return counted(await events_from(runtime, ip)) == 30

        await wait_for(all_counted, what="the summaries of closed windows")
        events = await events_from(runtime, ip)
    assert any(event["action"] == "authentication.failures" for event in events)


async def test_two_api_processes_count_in_one_window_through_redis(database_url: str, redis_url: str) -> None:
    """Two processes' failures from one IP and key: one first event, one summary counting the rest,
    whichever process flushes (both try)."""
    now = [time.time()]  # other processes' flushers, on the real clock, leave this window open
    config = RefusalAuditConfig()
    settings = make_settings(database_url)
    runtime = await Runtime.build(settings, database_url)
    redis = connect_redis(make_settings(database_url, redis_url=redis_url))
    assert redis is not None
    processes: list[AuthFailureAudit] = []
    try:
        processes += [
            AuthFailureAudit(
                RefusalAudit(runtime.db),
                config,
                shared=RedisWindows(redis, keys_per_ip=config.keys_per_ip, window_seconds=config.window_seconds),
                clock=lambda: now[0],
            )
            for _ in range(2)
        ]
        ip = fresh_ip()
        failure = FailedAuthentication("unknown_key", f"test:{uuid.uuid4().hex[:12]}")
        for i in range(100):
            for process in processes:
                await process.failed(failure, Origin(ip=ip, request_id=f"req_{i}"))
        assert [event["action"] for event in await events_from(runtime, ip)] == ["authentication.failed"]
        now[0] += config.window_seconds
        written = [await process.flush() for process in processes]
        assert sorted(written) == [0, 1]
        events = await events_from(runtime, ip)
        assert [event["action"] for event in events] == ["authentication.failed", "authentication.failures"]
        assert events[1]["details"]["count"] == 199
        assert counted(events) == 200
    finally:
        for process in processes:
            await process.aclose()
        await redis.aclose()
        await runtime.aclose()


async def test_redis_down_the_window_is_counted_in_process_and_the_answer_is_401(database_url: str) -> None:
    ip = fresh_ip()
    async with own_app(database_url, peer=(ip, 40004), redis_url="redis://127.0.0.1:1/0") as (runtime, client):
        answers = [await client.get("/v1/charges", headers={"Authorization": "Bearer x"}) for _ in range(5)]
        assert {answer.status_code for answer in answers} == {401}
        await runtime.auth_failures.flush(everything=True)
        events = await events_from(runtime, ip)
        assert counted(events) == 5
        assert counter(runtime, "payorch_audit_window_fallbacks_total") >= 5


async def test_a_failing_audit_write_leaves_the_401_and_is_counted(database_url: str) -> None:
    ip = fresh_ip()
    name = f"refuse_ip_{uuid.uuid4().hex[:10]}"
    async with own_app(database_url, peer=(ip, 40005)) as (runtime, client):
        await fetch_rows(
            runtime.db,
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.payload->'origin'->>'ip' = '{ip}' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$",
        )
        await fetch_rows(
            runtime.db, f"CREATE TRIGGER t_{name} BEFORE INSERT ON audit_outbox FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
        try:
            response = await client.get("/v1/charges", headers={"Authorization": "Bearer x"})
        finally:
            await fetch_rows(runtime.db, f"DROP TRIGGER t_{name} ON audit_outbox")
            await fetch_rows(runtime.db, f"DROP FUNCTION {name}()")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        assert await events_from(runtime, ip) == []
        assert counter(runtime, "payorch_audit_write_failures_total", kind="authentication") == 1
