"""The last attempt's outcome, the charge's new state, its stored reply and its audit events are
written by one statement (``storage.charges.close_charge``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from tests.factories import create_merchant, fetch_rows

from payorch.audit.events import Actor, AuditEvent, Resource, outbox_params
from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.storage import charge_writes
from payorch.storage import charges as repo
from payorch.storage import idempotency as idem_repo
from payorch.storage.charges import AttemptResult, Charge, NewCharge
from payorch.storage.idempotency import KeyRequest

APPROVED = AttemptResult("approved", "sbx_1", "approved", None, None, 12, None)


def event(merchant_id: str, action: str, resource_id: str) -> AuditEvent:
    return AuditEvent(
        actor=Actor(merchant_id=merchant_id), action=action, resource=Resource(type="charge", id=resource_id)
    )


async def _pending_charge(runtime: Runtime, merchant_id: str, key: str) -> tuple[Charge, str]:
    charge_id, attempt_id = new_id("ch"), new_id("att")
    new = NewCharge(charge_id, merchant_id, False, 700, "eur", True, None, None, idempotency_key=key)
    key = KeyRequest(merchant_id, key, b"f" * 32, "POST", "/v1/charges")
    async with runtime.db.connection() as connection:
        charge = await charge_writes.open_charge(
            connection, new, key=key, attempt_id=attempt_id, gateway="sandbox", token="tok_visa",
            audit=outbox_params([]), created_at=datetime.now(UTC),
        )  # fmt: skip
    assert isinstance(charge, Charge)
    return charge, attempt_id


async def _close(runtime: Runtime, charge: Charge, attempt_id: str, attempt: AttemptResult, key: str) -> bool:
    events = [event(charge.merchant_id, "charge.attempt.outcome", charge.id)]
    events.append(event(charge.merchant_id, "charge.succeeded", charge.id))
    async with runtime.db.connection() as connection:
        return await charge_writes.close_charge(
            connection,
            attempt_id=attempt_id,
            result=attempt,
            charge=charge,
            idempotency_key=key,
            reply_status=201,
            reply_body=b'{"id":"reply"}',
            audit=outbox_params(events, conditional=[False, True]),
        )


async def _audited(runtime: Runtime, charge_id: str) -> list[str]:
    sql = "SELECT payload->>'action' FROM audit_outbox WHERE payload->'resource'->>'id' = $1 ORDER BY seq"
    rows = await fetch_rows(runtime.db, sql, charge_id)
    return [row[0] for row in rows]


async def test_closing_writes_attempt_charge_reply_and_events_together(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    pending, attempt_id = await _pending_charge(runtime, merchant.id, "close-1")
    now = datetime.now(UTC)
    final = replace(
        pending, status="succeeded", amount_captured=700, gateway="sandbox", card_last4="4242", updated_at=now
    )
    assert await _close(runtime, final, attempt_id, APPROVED, "close-1")
    async with runtime.db.connection() as connection:
        stored = await repo.get_charge(connection, merchant.id, pending.id)
        (attempt,) = await repo.list_attempts(connection, merchant.id, pending.id)
        record = await idem_repo.get(connection, merchant.id, "close-1")
    # What the caller rendered is what the database now holds, updated_at included.
    assert stored == final
    assert (attempt.status, attempt.gateway_reference, attempt.latency_ms) == ("approved", "sbx_1", 12)
    assert record is not None
    assert (record.status, record.response_status, record.response_body) == ("completed", 201, b'{"id":"reply"}')
    assert await _audited(runtime, pending.id) == ["charge.attempt.outcome", "charge.succeeded"]


async def test_a_charge_moved_by_someone_else_is_left_alone_but_the_attempt_is_recorded(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    pending, attempt_id = await _pending_charge(runtime, merchant.id, "close-2")
    async with runtime.db.connection() as connection:  # the reconciler got there first
        await connection.execute(
            "UPDATE charges SET status = 'processing' WHERE merchant_id = $1 AND id = $2", merchant.id, pending.id
        )
    unknown = AttemptResult("unknown", None, None, None, None, 3000, datetime.now(UTC))
    final = replace(pending, status="succeeded", updated_at=datetime.now(UTC))
    assert not await _close(runtime, final, attempt_id, unknown, "close-2")
    async with runtime.db.connection() as connection:
        current = await repo.get_charge(connection, merchant.id, pending.id)
        (attempt,) = await repo.list_attempts(connection, merchant.id, pending.id)
        record = await idem_repo.get(connection, merchant.id, "close-2")
    assert current is not None
    assert current.status == "processing"
    assert attempt.status == "unknown"
    # Neither the reply nor the charge's own event: only the attempt's outcome was recorded.
    assert record is not None
    assert (record.status, record.response_body) == ("in_progress", None)
    assert await _audited(runtime, pending.id) == ["charge.attempt.outcome"]
