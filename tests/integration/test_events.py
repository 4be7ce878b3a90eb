"""Events come from the database: one row per state change, written by triggers in the changing
transaction, whoever changed the row (the API, or an operator in psql), and NOTIFY carries the id only."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
from tests.factories import charge_body, create_merchant, fetch_rows, post_charge

from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.storage import events as events_repo

EVENT_ID = re.compile(r"^evt_[0-9a-z]{26}$")


async def _types(runtime: Runtime, merchant_id: str, resource_id: str) -> list[str]:
    async with runtime.db.connection() as connection:
        return [e.type for e in await events_repo.list_for_resource(connection, merchant_id, resource_id)]


async def test_each_api_state_change_writes_one_event(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    succeeded = (await post_charge(client, merchant, charge_body("tok_visa"))).json()
    declined = (await post_charge(client, merchant, charge_body("tok_chargeDeclined"))).json()["error"]["charge"]
    authorized = (await post_charge(client, merchant, charge_body("tok_visa", capture=False))).json()

    assert await _types(runtime, merchant.id, succeeded["id"]) == ["charge.succeeded"]
    assert await _types(runtime, merchant.id, declined) == ["charge.failed"]
    assert await _types(runtime, merchant.id, authorized["id"]) == ["charge.authorized"]
    async with runtime.db.connection() as connection:
        (event,) = await events_repo.list_for_resource(connection, merchant.id, succeeded["id"])
    assert EVENT_ID.match(event.id)
    assert event.livemode is False
    assert event.payload["id"] == succeeded["id"]
    assert event.payload["status"] == "succeeded"
    assert event.payload["amount"] == succeeded["amount"]
    assert event.payload["card"] == succeeded["card"]


async def test_changes_made_by_hand_in_sql_write_events_too(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    charge = (await post_charge(client, merchant, charge_body("tok_visa", capture=False))).json()
    refund_id = new_id("re")
    async with runtime.db.transaction() as transaction:  # what an operator would type in psql
        await transaction.execute(
            "UPDATE charges SET status = 'succeeded', amount_captured = amount WHERE merchant_id = $1 AND id = $2",
            merchant.id,
            charge["id"],
        )
        await transaction.execute(
            "INSERT INTO refunds (id, merchant_id, charge_id, livemode, amount, currency, status, gateway) "
            "VALUES ($1, $2, $3, false, 500, 'usd', 'pending', 'sandbox')",
            refund_id,
            merchant.id,
            charge["id"],
        )
        await transaction.execute(
            "UPDATE refunds SET status = 'succeeded' WHERE merchant_id = $1 AND id = $2", merchant.id, refund_id
        )
        await transaction.execute(
            "UPDATE charges SET amount_refunded = 500 WHERE merchant_id = $1 AND id = $2", merchant.id, charge["id"]
        )
        # Not a state change: no event.
        await transaction.execute(
            "UPDATE charges SET description = 'edited' WHERE merchant_id = $1 AND id = $2", merchant.id, charge["id"]
        )

    assert await _types(runtime, merchant.id, charge["id"]) == [
        "charge.authorized",
        "charge.captured",
        "charge.refunded",
    ]
    assert await _types(runtime, merchant.id, refund_id) == ["refund.created", "refund.succeeded"]


async def test_a_rolled_back_change_leaves_no_event(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    charge = (await post_charge(client, merchant, charge_body("tok_visa", capture=False))).json()
    async with runtime.db.connection() as connection:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(
            "UPDATE charges SET status = 'canceled' WHERE merchant_id = $1 AND id = $2", merchant.id, charge["id"]
        )
        await transaction.rollback()
    assert await _types(runtime, merchant.id, charge["id"]) == ["charge.authorized"]


async def test_sql_event_ids_sort_with_python_ids(runtime: Runtime) -> None:
    before = new_id("evt")
    made = [str((await fetch_rows(runtime.db, "SELECT payorch_new_id('evt')"))[0][0]) for _ in range(3)]
    await asyncio.sleep(0.002)
    after = new_id("evt")
    assert all(EVENT_ID.match(i) for i in made)
    assert len(set(made)) == 3
    assert before[:14] <= min(made)[:14]
    assert max(made)[:14] <= after[:14]


async def test_a_payload_over_8000_bytes_is_notified_by_id(client: httpx.AsyncClient, runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    notified: list[str] = []
    async with runtime.db.dedicated() as listener:
        await listener.add_listener(events_repo.CHANNEL, lambda *args: notified.append(args[3]))
        metadata = {f"k{i:02d}": "x" * 480 for i in range(50)}  # about 25 kB in the snapshot
        response = await post_charge(client, merchant, charge_body("tok_visa", metadata=metadata))
        assert response.status_code == 201, response.text
        charge_id = response.json()["id"]
        async with runtime.db.connection() as connection:
            (event,) = await events_repo.list_for_resource(connection, merchant.id, charge_id)
        assert len(json.dumps(event.payload)) > 8000
        assert event.payload["metadata"] == metadata
        deadline = asyncio.get_running_loop().time() + 10
        while event.id not in notified:
            assert asyncio.get_running_loop().time() < deadline, notified
            await asyncio.sleep(0.02)
        assert all(EVENT_ID.match(payload) for payload in notified)  # ids only, never rows
