"""The audit trail as the charge path and the reconciler write it, through the real app and Runtime.

Events sit in ``audit_outbox`` until a shipper chains them into ``audit_chain``; other tests may run a
shipper on this database, so every lookup reads both, in order, filtered on this test's ids.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from tests.factories import charge_body, create_merchant, fetch_rows, post_charge

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage.database import Database


async def audit_events(db: Database, needle: str) -> list[dict[str, Any]]:
    """Every stored audit event whose JSON mentions ``needle`` (an id), chained ones first."""
    async with db.connection() as connection:
        chained = await connection.fetch(
            "SELECT canonical FROM audit_chain WHERE strpos(canonical, $1) > 0 ORDER BY seq", needle
        )
        pending = await connection.fetch(
            "SELECT payload FROM audit_outbox WHERE strpos(payload::text, $1) > 0 ORDER BY seq", needle
        )
    return [json.loads(row["canonical"])["event"] for row in chained] + [row["payload"] for row in pending]


async def wait_for(condition: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


def actions(events: list[dict[str, Any]]) -> list[str]:
    return [event["action"] for event in events]


async def test_a_successful_charge_records_who_what_and_from_where(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, charge_body(amount=1234, metadata={"order": "A-17"}), key="k-1")
    assert response.status_code == 201
    charge = response.json()
    events = await audit_events(runtime.db, charge["id"])
    assert actions(events) == [
        "charge.created",
        "charge.attempt.sent",
        "charge.attempt.outcome",
        "charge.succeeded",
    ]
    for event in events:
        assert event["actor"] == {"merchant_id": merchant.id, "api_key_id": merchant.key_id, "user": None}
        assert event["origin"]["request_id"] == response.headers["Request-Id"]
        assert event["origin"]["ip"]
        assert event["id"].startswith("aud_")
    created, sent, outcome, succeeded = events
    assert created["resource"] == {"type": "charge", "id": charge["id"]}
    assert created["details"]["amount"] == 1234
    assert created["details"]["currency"] == "usd"
    assert created["details"]["metadata"] == {"order": "A-17"}
    assert created["details"]["idempotency_key"] == "k-1"
    assert sent["details"] == {"charge": charge["id"], "gateway": "sandbox", "seq": 1}
    assert sent["resource"]["id"] == outcome["resource"]["id"]
    assert outcome["outcome"] == "success"
    assert outcome["details"]["status"] == "approved"
    assert succeeded["outcome"] == "success"
    assert succeeded["details"]["gateway"] == "sandbox"


async def test_a_decline_and_a_failover_record_every_attempt(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    declined = await post_charge(client, merchant, charge_body("tok_chargeDeclined"))
    assert declined.status_code == 402
    charge_id = declined.json()["error"]["charge"]
    events = await audit_events(runtime.db, charge_id)
    assert actions(events) == ["charge.created", "charge.attempt.sent", "charge.attempt.outcome", "charge.failed"]
    assert events[2]["outcome"] == "failure"
    assert events[3]["details"]["decline_code"] == "card_declined"

    body = charge_body()
    body["payment_method"] = {"tokens": {"sandbox": "tok_unavailable", "sandbox_backup": "tok_visa"}}
    failover = await post_charge(client, merchant, body)
    assert failover.status_code == 201
    events = await audit_events(runtime.db, failover.json()["id"])
    assert actions(events) == [
        "charge.created",
        "charge.attempt.sent",
        "charge.attempt.outcome",
        "charge.attempt.sent",
        "charge.attempt.outcome",
        "charge.succeeded",
    ]
    assert [(e["details"]["gateway"], e["details"].get("status")) for e in events[1:5]] == [
        ("sandbox", None),
        ("sandbox", "not_sent"),
        ("sandbox_backup", None),
        ("sandbox_backup", "approved"),
    ]


async def test_processing_then_the_reconcilers_decision(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, charge_body("tok_timeout"))
    assert response.status_code == 202
    charge_id = response.json()["id"]
    events = await audit_events(runtime.db, charge_id)
    assert actions(events)[-2:] == ["charge.attempt.outcome", "charge.processing"]
    assert events[-2]["outcome"] == "unknown"

    async def resolved() -> bool:
        await runtime.reconciler.run_once()
        fetched = await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)
        return bool(fetched.json()["status"] == "succeeded")

    await wait_for(resolved)
    events = await audit_events(runtime.db, charge_id)
    by_reconciler = [e for e in events if e["actor"]["user"] == "system:reconciler"]
    assert by_reconciler, "the reconciler's decisions are audited"
    assert all(e["actor"]["merchant_id"] == merchant.id for e in by_reconciler)
    decisions = [e["details"]["decision"] for e in by_reconciler if e["action"] == "reconciler.decision"]
    assert decisions[-1] == "resolved"
    assert set(decisions) <= {"rescheduled", "resolved"}
    assert [e["action"] for e in by_reconciler][-3:] == [
        "charge.succeeded",
        "charge.attempt.outcome",
        "reconciler.decision",
    ]


@pytest.fixture
async def unraising_client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The app as a server answers an unexpected failure with a 500 envelope instead of raising."""
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield http


async def test_a_charge_whose_transaction_fails_at_commit_leaves_no_audit_row(
    runtime: Runtime, unraising_client: httpx.AsyncClient
) -> None:
    """A deferred constraint fails the creating transaction at COMMIT, after the charge, its attempt,
    the idempotency key and the audit rows were all written: none of them may survive."""
    marker = f"rollback-{uuid.uuid4().hex}"
    function, trigger = f"refuse_{marker.replace('-', '_')}", f"t_{marker.replace('-', '_')}"
    async with runtime.db.transaction() as transaction:
        await transaction.execute(
            f"CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.description = '{marker}' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
            "RETURN NULL; END $$"
        )
        await transaction.execute(
            f"CREATE CONSTRAINT TRIGGER {trigger} AFTER INSERT ON charges DEFERRABLE INITIALLY DEFERRED "
            f"FOR EACH ROW EXECUTE FUNCTION {function}()"
        )
    try:
        merchant = await create_merchant(runtime)
        failed = await post_charge(unraising_client, merchant, charge_body(description=marker), key=marker)
        committed = await post_charge(unraising_client, merchant, charge_body(description="kept"))
    finally:
        await fetch_rows(runtime.db, f"DROP TRIGGER {trigger} ON charges")
        await fetch_rows(runtime.db, f"DROP FUNCTION {function}()")
    assert failed.status_code == 500
    assert failed.json()["error"]["type"] == "api_error"
    assert await audit_events(runtime.db, marker) == []
    assert failed.json()["error"]["request_id"] not in ("", "req_unknown")
    assert failed.headers["request-id"] == failed.json()["error"]["request_id"]
    assert await audit_events(runtime.db, failed.json()["error"]["request_id"]) == []
    listed = await unraising_client.get("/v1/charges?limit=100", headers=merchant.headers)
    assert [c["description"] for c in listed.json()["data"]] == ["kept"]

    assert committed.status_code == 201
    kept = await audit_events(runtime.db, committed.json()["id"])
    assert actions(kept)[0] == "charge.created"
    assert kept[0]["origin"]["request_id"] == committed.headers["Request-Id"]

    # The key was rolled back with the rest: a retry takes it afresh and is recorded.
    retried = await post_charge(unraising_client, merchant, charge_body(description=marker), key=marker)
    assert retried.status_code == 201
    assert actions(await audit_events(runtime.db, retried.json()["id"]))[0] == "charge.created"


async def test_refused_idempotent_requests_record_nothing(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    key = f"idem-{uuid.uuid4().hex}"
    first = await post_charge(client, merchant, charge_body(amount=500), key=key)
    assert first.status_code == 201
    replay = await post_charge(client, merchant, charge_body(amount=500), key=key)
    mismatch = await post_charge(client, merchant, charge_body(amount=999), key=key)
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert mismatch.status_code == 400
    assert mismatch.json()["error"]["type"] == "idempotency_error"
    assert len([e for e in await audit_events(runtime.db, first.json()["id"]) if e["action"] == "charge.created"]) == 1
    assert await audit_events(runtime.db, replay.headers["Request-Id"]) == []
    assert await audit_events(runtime.db, mismatch.headers["Request-Id"]) == []
