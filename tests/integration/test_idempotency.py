"""Stripe's idempotency semantics on POST /v1/charges."""

from __future__ import annotations

import asyncio
import secrets

import httpx
from tests.factories import charge_body, create_merchant, post_charge, query

from payorch.runtime import Runtime
from payorch.storage import idempotency as idem_repo


async def ledger_count(runtime: Runtime, merchant_id: str) -> int:
    return int(
        (await query(runtime.db, "SELECT count(*) FROM sandbox_payments WHERE merchant_id = :m", m=merchant_id))[0][0]
    )


async def test_a_repeat_replays_byte_for_byte(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    key = secrets.token_hex(8)
    first = await post_charge(client, merchant, charge_body(), key=key)
    second = await post_charge(client, merchant, charge_body(), key=key)
    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert await ledger_count(runtime, merchant.id) == 1


async def test_a_declined_answer_is_replayed_too(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    first = await post_charge(client, merchant, charge_body("tok_chargeDeclined"), key="decline-1")
    second = await post_charge(client, merchant, charge_body("tok_chargeDeclined"), key="decline-1")
    assert first.status_code == second.status_code == 402
    assert second.content == first.content
    assert await ledger_count(runtime, merchant.id) == 1


async def test_same_key_other_parameters_is_400(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    await post_charge(client, merchant, charge_body(amount=500), key="k1")
    response = await post_charge(client, merchant, charge_body(amount=501), key="k1")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "idempotency_error"
    assert await ledger_count(runtime, merchant.id) == 1


async def test_keys_are_per_merchant(runtime: Runtime, client: httpx.AsyncClient) -> None:
    first, second = await create_merchant(runtime), await create_merchant(runtime)
    a = await post_charge(client, first, charge_body(), key="shared")
    b = await post_charge(client, second, charge_body(), key="shared")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]


async def test_fifty_concurrent_requests_charge_once(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    key = secrets.token_hex(8)
    responses = await asyncio.gather(*(post_charge(client, merchant, charge_body(), key=key) for _ in range(50)))
    assert await ledger_count(runtime, merchant.id) == 1
    charges = [r for r in responses if r.status_code == 201]
    conflicts = [r for r in responses if r.status_code == 409]
    assert len(charges) + len(conflicts) == 50
    assert len(charges) >= 1
    assert len({r.json()["id"] for r in charges}) == 1
    assert all(r.json()["error"]["type"] == "idempotency_error" for r in conflicts)
    listed = (await client.get("/v1/charges", headers=merchant.headers)).json()["data"]
    assert len(listed) == 1


async def test_a_repeat_while_processing_is_409(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    first = await post_charge(client, merchant, charge_body("tok_timeout"), key="slow")
    assert first.status_code == 202
    again = await post_charge(client, merchant, charge_body("tok_timeout"), key="slow")
    assert again.status_code == 409
    assert await ledger_count(runtime, merchant.id) == 1


async def test_a_key_abandoned_by_a_dead_request_answers_with_its_charge(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    first = await post_charge(client, merchant, charge_body("tok_timeout"), key="dead")
    assert first.status_code == 202
    # The request that took the key died a minute ago: its lock is stale.
    await query(
        runtime.db,
        "UPDATE idempotency_keys SET locked_at = now() - interval '10 minutes' WHERE merchant_id = :m",
        m=merchant.id,
    )
    retry = await post_charge(client, merchant, charge_body("tok_timeout"), key="dead")
    assert retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert await ledger_count(runtime, merchant.id) == 1


async def test_keys_are_purged_after_their_ttl(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    await post_charge(client, merchant, charge_body(), key="old")
    await post_charge(client, merchant, charge_body(), key="young")
    await query(
        runtime.db,
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE merchant_id = :m AND key = 'old'",
        m=merchant.id,
    )
    async with runtime.db.connection() as connection:
        purged = await idem_repo.purge_older_than(connection, 24)
    assert purged >= 1
    async with runtime.db.connection() as connection:
        assert await idem_repo.get(connection, merchant.id, "old") is None
        assert await idem_repo.get(connection, merchant.id, "young") is not None
