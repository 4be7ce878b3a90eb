"""The transactional outbox on the project's migrated Postgres: an action and its audit row commit or
roll back together, and what is stored is already redacted."""

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Resource, record
from payorch.ids import new_id
from payorch.storage import audit as audit_store
from payorch.storage import merchants as merchant_repo
from payorch.storage.engine import SessionFactory, create_engine, session_factory, unit_of_work


class ActionFailed(Exception):
    pass


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    built = create_engine(database_url, pool_size=5)
    yield built
    await built.dispose()


@pytest.fixture(scope="module")
def sessions(engine: AsyncEngine) -> SessionFactory:
    return session_factory(engine)


def merchant_created(merchant_id: str, **details) -> AuditEvent:
    return AuditEvent(
        actor=Actor(merchant_id=merchant_id, user="cli:ops"),
        action=AuditAction.MERCHANT_CREATED,
        resource=Resource(type="merchant", id=merchant_id),
        origin=Origin(ip="198.51.100.4", request_id=f"req_{uuid.uuid4().hex}"),
        details=details,
    )


async def outbox_payload(sessions: SessionFactory, event_id: str) -> dict | None:
    async with sessions() as session:
        row = (
            await session.execute(
                select(audit_store.audit_outbox.c.payload).where(audit_store.audit_outbox.c.event_id == event_id)
            )
        ).first()
    return None if row is None else row.payload


async def test_committed_action_has_its_audit_row(sessions):
    merchant_id = new_id("mer")
    event = merchant_created(merchant_id, name="Acme")
    async with unit_of_work(sessions) as session:
        await merchant_repo.insert_merchant(session, merchant_id, "Acme")
        await record(session, event)
    payload = await outbox_payload(sessions, event.id)
    assert payload == event.redacted_payload()
    async with sessions() as session:
        row = (
            await session.execute(
                select(audit_store.audit_outbox).where(audit_store.audit_outbox.c.event_id == event.id)
            )
        ).one()
    assert row.merchant_id == merchant_id
    assert row.occurred_at == event.occurred_at


async def test_rolled_back_action_leaves_no_audit_row(sessions):
    merchant_id = new_id("mer")
    event = merchant_created(merchant_id)

    async def create_then_fail() -> None:
        async with unit_of_work(sessions) as session:
            await merchant_repo.insert_merchant(session, merchant_id, "Rolled back")
            await record(session, event)
            raise ActionFailed

    with pytest.raises(ActionFailed):
        await create_then_fail()
    assert await outbox_payload(sessions, event.id) is None
    async with sessions() as session:
        assert await audit_store.count_outbox(session, event_id=event.id) == 0
        found = await session.execute(text("SELECT 1 FROM merchants WHERE id = :id"), {"id": merchant_id})
        assert found.first() is None


async def test_an_action_that_fails_in_the_database_takes_its_audit_row_with_it(sessions):
    merchant_id = new_id("mer")
    async with unit_of_work(sessions) as session:
        await merchant_repo.insert_merchant(session, merchant_id, "First")
    duplicate = merchant_created(merchant_id)

    async def audit_then_fail() -> None:
        async with unit_of_work(sessions) as session:
            await record(session, duplicate)  # audit first, then the action fails
            await merchant_repo.insert_merchant(session, merchant_id, "Duplicate id")

    with pytest.raises(DBAPIError):
        await audit_then_fail()
    assert await outbox_payload(sessions, duplicate.id) is None


async def test_what_is_stored_is_redacted(sessions):
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
    async with unit_of_work(sessions) as session:
        await record(session, event)
    stored = json.dumps(await outbox_payload(sessions, event.id))
    for secret in (
        "4242424242424242",
        "5555555555554444",
        "sk_live_51AbCdEfGhIjKlMnOp",
        '"123"',
        "eyJhbGciOi",
    ):
        assert secret not in stored.replace(" ", "")
    assert "424242******4242" in stored
