"""The transactional outbox on the project's migrated Postgres: an action and its audit row commit or
roll back together, and what is stored is already redacted."""

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from tests.factories import fetch_rows

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Resource, record
from payorch.ids import new_id
from payorch.storage import audit as audit_store
from payorch.storage import merchants as merchant_repo
from payorch.storage.database import Database, DatabaseConfig


class ActionFailed(Exception):
    pass


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    built = Database(DatabaseConfig(database_url, pool_size=5))
    yield built
    await built.close()


def merchant_created(merchant_id: str, **details) -> AuditEvent:
    return AuditEvent(
        actor=Actor(merchant_id=merchant_id, user="cli:ops"),
        action=AuditAction.MERCHANT_CREATED,
        resource=Resource(type="merchant", id=merchant_id),
        origin=Origin(ip="198.51.100.4", request_id=f"req_{uuid.uuid4().hex}"),
        details=details,
    )


async def outbox_payload(db: Database, event_id: str) -> dict | None:
    rows = await fetch_rows(db, "SELECT payload FROM audit_outbox WHERE event_id = $1", event_id)
    return rows[0]["payload"] if rows else None


async def test_committed_action_has_its_audit_row(db):
    merchant_id = new_id("mer")
    event = merchant_created(merchant_id, name="Acme")
    async with db.transaction() as transaction:
        await merchant_repo.insert_merchant(transaction, merchant_id, "Acme")
        await record(transaction, event)
    payload = await outbox_payload(db, event.id)
    assert payload == event.redacted_payload()
    (row,) = await fetch_rows(db, "SELECT * FROM audit_outbox WHERE event_id = $1", event.id)
    assert row["merchant_id"] == merchant_id
    assert row["occurred_at"] == event.occurred_at


async def test_rolled_back_action_leaves_no_audit_row(db):
    merchant_id = new_id("mer")
    event = merchant_created(merchant_id)

    async def create_then_fail() -> None:
        async with db.transaction() as transaction:
            await merchant_repo.insert_merchant(transaction, merchant_id, "Rolled back")
            await record(transaction, event)
            raise ActionFailed

    with pytest.raises(ActionFailed):
        await create_then_fail()
    assert await outbox_payload(db, event.id) is None
    async with db.connection() as connection:
        assert await audit_store.count_outbox(connection, event_id=event.id) == 0
    assert await fetch_rows(db, "SELECT 1 FROM merchants WHERE id = $1", merchant_id) == []


async def test_an_action_that_fails_in_the_database_takes_its_audit_row_with_it(db):
    merchant_id = new_id("mer")
    async with db.transaction() as transaction:
        await merchant_repo.insert_merchant(transaction, merchant_id, "First")
    duplicate = merchant_created(merchant_id)

    async def audit_then_fail() -> None:
        async with db.transaction() as transaction:
            await record(transaction, duplicate)  # audit first, then the action fails
            await merchant_repo.insert_merchant(transaction, merchant_id, "Duplicate id")

    with pytest.raises(asyncpg.UniqueViolationError):
        await audit_then_fail()
    assert await outbox_payload(db, duplicate.id) is None


async def test_what_is_stored_is_redacted(db):
    merchant_id = new_id("mer")
    event = merchant_created(
        merchant_id,
        metadata={"note": "card 4242 4242 4242 4242 exp 12/30", "pan": "5555555555554444"},
        api_key="sk_live_51AbCdEfGhIjKlMnOp",
        cvc="123",
        numbers=[4242424242424242],
        headers={"Authorization": "Bearer eyJhbGciOi.eyJzdWIi.c2lnbmF0dXJl"},
        description="nul \x00 byte",
    )
    async with db.transaction() as transaction:
        await record(transaction, event)
    stored = json.dumps(await outbox_payload(db, event.id))
    for secret in (
        "4242424242424242",
        "5555555555554444",
        "sk_live_51AbCdEfGhIjKlMnOp",
        '"123"',
        "eyJhbGciOi",
    ):
        assert secret not in stored.replace(" ", "")
    assert "424242******4242" in stored
