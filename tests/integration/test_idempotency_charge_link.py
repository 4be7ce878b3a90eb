"""An idempotency key names the charge it created, in the same transaction (no attach round trip)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import text
from tests.factories import charge_body, create_merchant, post_charge

from payorch.audit.events import Actor, AuditEvent, Resource, outbox_columns
from payorch.ids import new_id
from payorch.payments.idempotency import fingerprint
from payorch.runtime import Runtime
from payorch.storage import charges as charges_repo
from payorch.storage import idempotency as idem_repo
from payorch.storage.charges import Charge, NewCharge
from payorch.storage.engine import driver_connection, unit_of_work


async def test_a_taken_key_names_its_charge(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, charge_body(), key="names-its-charge")
    assert response.status_code == 201
    async with unit_of_work(runtime.sessions) as session:
        record = await idem_repo.get(session, merchant.id, "names-its-charge")
    assert record is not None
    assert record.charge_id == response.json()["id"]
    assert record.status == "completed"
    assert record.response_body == response.content


async def test_a_key_abandoned_before_its_charge_existed_is_taken_over(
    runtime: Runtime, client: httpx.AsyncClient
) -> None:
    merchant = await create_merchant(runtime)
    body = charge_body()
    # A request took the key, then died before it wrote its charge; its lock is long stale.
    async with unit_of_work(runtime.sessions) as session:
        await idem_repo.try_take(
            session,
            merchant_id=merchant.id,
            key="died-early",
            fingerprint=fingerprint("POST", "/v1/charges", body, False),
            method="POST",
            path="/v1/charges",
        )
        await session.execute(
            text("UPDATE idempotency_keys SET locked_at = now() - interval '10 minutes' WHERE merchant_id = :m"),
            {"m": merchant.id},
        )
    retry = await post_charge(client, merchant, body, key="died-early")
    assert retry.status_code == 201
    async with unit_of_work(runtime.sessions) as session:
        record = await idem_repo.get(session, merchant.id, "died-early")
    assert record is not None
    assert record.charge_id == retry.json()["id"]
    again = await post_charge(client, merchant, body, key="died-early")
    assert again.status_code == 201
    assert again.content == retry.content


async def test_an_existing_key_makes_the_one_statement_insert_write_nothing(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)

    def new_charge() -> NewCharge:
        return NewCharge(new_id("ch"), merchant.id, False, 900, "usd", True, None, None, idempotency_key="once")

    def created(charge: NewCharge) -> AuditEvent:
        resource = Resource(type="charge", id=charge.id)
        return AuditEvent(actor=Actor(merchant_id=merchant.id), action="charge.created", resource=resource)

    async def open_(charge: NewCharge) -> Charge | idem_repo.IdempotencyRecord | None:
        async with driver_connection(runtime.sessions) as connection:
            return await charges_repo.open_charge(
                connection, charge, attempt_id=new_id("att"), gateway="sandbox", token="tok_visa",
                fingerprint=b"f" * 32, method="POST", path="/v1/charges", audit=outbox_columns([created(charge)]),
                created_at=datetime.now(UTC),
            )  # fmt: skip

    first, second = new_charge(), new_charge()
    taken = await open_(first)
    assert taken is not None
    assert (taken.id, taken.status, taken.amount) == (first.id, "pending", 900)
    existing = await open_(second)  # the key's record comes back instead, for a replay
    assert isinstance(existing, idem_repo.IdempotencyRecord)
    assert (existing.key, existing.status, existing.charge_id, existing.fingerprint) == (
        "once",
        "in_progress",
        first.id,
        b"f" * 32,
    )
    async with unit_of_work(runtime.sessions) as session:
        assert await charges_repo.get_charge(session, merchant.id, second.id) is None
        (attempt,) = await charges_repo.list_attempts(session, merchant.id, first.id)
        record = await idem_repo.get(session, merchant.id, "once")
        audited = (
            (
                await session.execute(
                    text("SELECT payload->'resource'->>'id' FROM audit_outbox WHERE merchant_id = :m ORDER BY seq"),
                    {"m": merchant.id},
                )
            )
            .scalars()
            .all()
        )
    assert (attempt.seq, attempt.status) == (1, "pending")
    assert record is not None
    assert record.charge_id == first.id
    # The second statement wrote neither its charge nor its audit event.
    assert audited == [first.id]
