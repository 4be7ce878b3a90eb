"""Every event carries its object's sequence number (migration 0008, issue 18): concurrent changes
of one charge and of its refunds number its events 1, 2, 3 ... with no gap and in the order they
were written, and every delivery carries the number, so a receiver can order what arrived."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge, query
from tests.fakes.merchant_endpoint import MerchantEndpoint, verify

from payorch.runtime import Runtime
from payorch.storage import events as events_repo

REFUNDS = 12
DISPUTES = 4
WEBHOOKS = {
    "secret_key": Fernet.generate_key().decode(),
    "poll_interval_seconds": 0.2,
    "retry_base_seconds": 0.05,
    "retry_max_interval_seconds": 0.2,
    "allow_loopback_endpoints": True,  # the merchant's endpoint runs on this machine
}


@pytest.fixture
def endpoint() -> Iterator[MerchantEndpoint]:
    with MerchantEndpoint() as server:
        yield server


@contextlib.asynccontextmanager
async def dispatching(runtime: Runtime) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.webhooks.dispatcher.run_forever(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)


async def object_events(runtime: Runtime, merchant_id: str) -> dict[str, list[dict[str, Any]]]:
    """Each object's events in the order they were written (created_at is clock_timestamp())."""
    rows = await query(
        runtime.db,
        "SELECT id, resource_id, type, sequence FROM events WHERE merchant_id = :m ORDER BY created_at, id",
        m=merchant_id,
    )
    by_object: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_object[row["resource_id"]].append(dict(row))
    return by_object


async def refund(client: httpx.AsyncClient, merchant: MerchantFixture, charge_id: str) -> httpx.Response:
    return await client.post("/v1/refunds", json={"charge": charge_id, "amount": 100}, headers=merchant.headers)


async def dispute(runtime: Runtime, merchant_id: str, charge_id: str, number: int) -> str | None:
    async with runtime.db.transaction() as transaction:
        return await events_repo.emit_for_charge(
            transaction, merchant_id, charge_id, "charge.disputed", {"dispute": {"id": f"dp_{number}"}}
        )


async def test_concurrent_changes_of_one_charge_number_its_events_without_gaps(
    database_url: str, endpoint: MerchantEndpoint
) -> None:
    async with own_app(database_url, webhooks=WEBHOOKS) as (runtime, client):
        merchant = await create_merchant(runtime)
        subscribed = await client.post(
            "/v1/webhook_endpoints", json={"url": endpoint.url, "enabled_events": ["*"]}, headers=merchant.headers
        )
        assert subscribed.status_code == 201, subscribed.text
        charge = (await post_charge(client, merchant, charge_body(amount=5000))).json()

        # Refunds (each moves the charge's amount_refunded under its row lock) and disputes (events
        # no row change makes) of one charge, all at once.
        results = await asyncio.gather(
            *[refund(client, merchant, charge["id"]) for _ in range(REFUNDS)],
            *[dispute(runtime, merchant.id, charge["id"], n) for n in range(DISPUTES)],
        )

        assert [r.status_code for r in results[:REFUNDS]] == [201] * REFUNDS  # type: ignore[union-attr]
        assert all(results[REFUNDS:])
        by_object = await object_events(runtime, merchant.id)
        charge_events = by_object.pop(charge["id"])
        assert len(charge_events) == 1 + REFUNDS + DISPUTES  # succeeded, refunded x12, disputed x4
        # Numbered 1..n with no gap, in the order they were written.
        assert [e["sequence"] for e in charge_events] == list(range(1, len(charge_events) + 1))
        assert charge_events[0]["type"] == "charge.succeeded"
        assert len(by_object) == REFUNDS
        for refund_events in by_object.values():
            assert [(e["type"], e["sequence"]) for e in refund_events] == [
                ("refund.created", 1),
                ("refund.succeeded", 2),
            ]

        # Every delivery carries its event's sequence; sorting by it restores the order written.
        written = {e["id"]: e["sequence"] for events in [charge_events, *by_object.values()] for e in events}
        async with dispatching(runtime):
            await endpoint.until(lambda: len({a.webhook_id for a in endpoint.acknowledged()}) == len(written))
        delivered = [verify(a, subscribed.json()["secret"]) for a in endpoint.acknowledged()]
        assert {event["id"]: event["sequence"] for event in delivered} == written
        of_charge = sorted(
            (e for e in delivered if e["data"]["object"]["id"] == charge["id"]),  # type: ignore[index]
            key=lambda e: e["sequence"],  # type: ignore[arg-type,return-value]
        )
        assert [e["id"] for e in of_charge] == [e["id"] for e in charge_events]


async def test_an_objects_events_are_read_in_sequence_order(database_url: str) -> None:
    async with own_app(database_url) as (runtime, client):
        merchant = await create_merchant(runtime)
        # tok_error: a 500 after charging, resolved by a lookup within the request.
        charge_id = (await post_charge(client, merchant, charge_body("tok_error"))).json()["id"]
        await client.post("/v1/refunds", json={"charge": charge_id}, headers=merchant.headers)

        async with runtime.db.connection() as connection:
            events = await events_repo.list_for_resource(connection, merchant.id, charge_id)

        assert [(e.type, e.sequence) for e in events] == [("charge.succeeded", 1), ("charge.refunded", 2)]
