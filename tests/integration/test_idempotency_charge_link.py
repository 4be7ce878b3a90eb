"""An idempotency key names the charge it created, in the same statement (no attach round trip)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from tests.factories import charge_body, create_merchant, fetch_rows, post_charge

from payorch.audit.events import Actor, AuditEvent, Resource, outbox_params
from payorch.ids import new_id
from payorch.payments.operations import fingerprint
from payorch.runtime import Runtime
from payorch.storage import charge_writes
from payorch.storage import charges as charges_repo
from payorch.storage import idempotency as idem_repo
from payorch.storage.charges import Charge, NewCharge
from payorch.storage.idempotency import KeyExists, KeyRequest


async def test_a_taken_key_names_its_charge(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, charge_body(), key="names-its-charge")
    assert response.status_code == 201
    async with runtime.db.connection() as connection:
        record = await idem_repo.get(connection, merchant.id, "names-its-charge")
    assert record is not None
    assert record.object_id == response.json()["id"]
    assert record.status == "completed"
    assert record.response_body == response.content


async def test_a_key_abandoned_before_its_charge_existed_is_taken_over(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    body = charge_body()
    # A request took the key, then died before it wrote its charge; its lock is long stale.
    key = KeyRequest(merchant.id, "died-early", fingerprint("POST", "/v1/charges", body, False), "POST", "/v1/charges")
    async with runtime.db.transaction() as tx:
        assert await idem_repo.take(tx, key, None) is None
        await tx.execute(
            "UPDATE idempotency_keys SET locked_at = now() - interval '10 minutes' WHERE merchant_id = $1", merchant.id
        )
    retry = await post_charge(client, merchant, body, key="died-early")
    assert retry.status_code == 201
    async with runtime.db.connection() as connection:
        record = await idem_repo.get(connection, merchant.id, "died-early")
    assert record is not None
    assert record.object_id == retry.json()["id"]
    again = await post_charge(client, merchant, body, key="died-early")
    assert again.status_code == 201
    assert again.content == retry.content


async def test_an_existing_key_makes_the_one_statement_insert_write_nothing(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    key = KeyRequest(merchant.id, "once", b"f" * 32, "POST", "/v1/charges")

    def new_charge() -> NewCharge:
        return NewCharge(new_id("ch"), merchant.id, False, 900, "usd", True, None, None, idempotency_key="once")

    def created(charge: NewCharge) -> AuditEvent:
        resource = Resource(type="charge", id=charge.id)
        return AuditEvent(actor=Actor(merchant_id=merchant.id), action="charge.created", resource=resource)

    async def open_(charge: NewCharge) -> Charge | KeyExists:
        async with runtime.db.connection() as connection:
            return await charge_writes.open_charge(
                connection, charge, key=key, attempt_id=new_id("att"), gateway="sandbox", token="tok_visa",
                audit=outbox_params([created(charge)], conditional=True), created_at=datetime.now(UTC),
            )  # fmt: skip

    first, second = new_charge(), new_charge()
    taken = await open_(first)
    assert isinstance(taken, Charge)
    assert (taken.id, taken.status, taken.amount) == (first.id, "pending", 900)
    existing = await open_(second)  # the key's record comes back instead, for a replay
    assert isinstance(existing, KeyExists)
    assert existing.record is not None
    assert (existing.record.key, existing.record.status, existing.record.object_id, existing.record.fingerprint) == (
        "once",
        "in_progress",
        first.id,
        b"f" * 32,
    )
    async with runtime.db.connection() as connection:
        assert await charges_repo.get_charge(connection, merchant.id, second.id) is None
        (attempt,) = await charges_repo.list_attempts(connection, merchant.id, first.id)
        record = await idem_repo.get(connection, merchant.id, "once")
    sql = "SELECT payload->'resource'->>'id' FROM audit_outbox WHERE merchant_id = $1 ORDER BY seq"
    audited = [row[0] for row in await fetch_rows(runtime.db, sql, merchant.id)]
    assert (attempt.seq, attempt.status) == (1, "pending")
    assert record is not None
    assert record.object_id == first.id
    # The second statement wrote neither its charge nor its audit event.
    assert audited == [first.id]
