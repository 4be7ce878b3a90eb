"""The last attempt's outcome and the charge's new state are written by one statement."""

from __future__ import annotations

from tests.factories import create_merchant

from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.storage import charges as repo
from payorch.storage.charges import NewCharge
from payorch.storage.engine import unit_of_work


async def _pending_charge(runtime: Runtime, merchant_id: str) -> tuple[str, str]:
    charge_id, attempt_id = new_id("ch"), new_id("att")
    new = NewCharge(charge_id, merchant_id, False, 700, "eur", True, None, None)
    async with unit_of_work(runtime.sessions) as session:
        await repo.insert_charge_with_attempt(session, new, attempt_id=attempt_id, gateway="sandbox", token="tok_visa")
    return charge_id, attempt_id


async def test_finishing_moves_the_attempt_and_the_charge(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    charge_id, attempt_id = await _pending_charge(runtime, merchant.id)
    async with unit_of_work(runtime.sessions) as session:
        charge = await repo.finish_attempt_and_charge(
            session,
            merchant.id,
            attempt_id=attempt_id,
            attempt_expected="pending",
            attempt_values={"status": "approved", "gateway_reference": "sbx_1", "latency_ms": 12},
            charge_id=charge_id,
            charge_expected="pending",
            charge_values={"status": "succeeded", "amount_captured": 700, "gateway": "sandbox", "card_last4": "4242"},
        )
    assert charge is not None
    assert (charge.status, charge.amount_captured, charge.card_last4, charge.metadata) == ("succeeded", 700, "4242", {})
    assert charge.updated_at >= charge.created_at
    async with unit_of_work(runtime.sessions) as session:
        (attempt,) = await repo.list_attempts(session, merchant.id, charge_id)
    assert (attempt.status, attempt.gateway_reference, attempt.latency_ms) == ("approved", "sbx_1", 12)


async def test_a_charge_moved_by_someone_else_is_left_alone_but_the_attempt_is_recorded(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    charge_id, attempt_id = await _pending_charge(runtime, merchant.id)
    async with unit_of_work(runtime.sessions) as session:  # the reconciler got there first
        await repo.update_charge(session, merchant.id, charge_id, expected_status="pending", status="processing")
    async with unit_of_work(runtime.sessions) as session:
        charge = await repo.finish_attempt_and_charge(
            session,
            merchant.id,
            attempt_id=attempt_id,
            attempt_expected="pending",
            attempt_values={"status": "unknown"},
            charge_id=charge_id,
            charge_expected="pending",
            charge_values={"status": "succeeded"},
        )
        assert charge is None
        current = await repo.get_charge(session, merchant.id, charge_id)
        (attempt,) = await repo.list_attempts(session, merchant.id, charge_id)
    assert current is not None
    assert current.status == "processing"
    assert attempt.status == "unknown"
