"""Failover only where no customer can be charged twice; the reconciler resolves what is unknown."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from tests.factories import create_merchant, insert_pending_charge, post_charge, query

from payorch.gateways.base import GatewayResult, Outcome, PaymentRequest
from payorch.gateways.sandbox.adapter import SandboxGateway
from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.storage import charges as repo
from payorch.storage.charges import NewCharge
from payorch.storage.sandbox import SandboxLedger


def two_tokens(primary: str, backup: str = "tok_visa") -> dict[str, object]:
    return {
        "amount": 2000,
        "currency": "eur",
        "payment_method": {"tokens": {"sandbox": primary, "sandbox_backup": backup}},
    }


async def books(runtime: Runtime, charge_id: str) -> list[tuple[str, str]]:
    rows = await query(
        runtime.db, "SELECT gateway, status FROM sandbox_payments WHERE charge_id = :c ORDER BY created_at", c=charge_id
    )
    return [tuple(r) for r in rows]


async def attempts(runtime: Runtime, merchant_id: str, charge_id: str) -> list[tuple[str, str]]:
    async with runtime.db.connection() as connection:
        return [(a.gateway, a.status) for a in await repo.list_attempts(connection, merchant_id, charge_id)]


async def wait_for(condition, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.05)


async def test_not_sent_fails_over_to_the_backup(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, two_tokens("tok_unavailable"))
    assert response.status_code == 201
    charge = response.json()
    assert charge["gateway"] == "sandbox_backup"
    assert await attempts(runtime, merchant.id, charge["id"]) == [
        ("sandbox", "not_sent"),
        ("sandbox_backup", "approved"),
    ]
    assert await books(runtime, charge["id"]) == [("sandbox_backup", "captured")]


async def test_a_hard_decline_never_reaches_the_backup(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, two_tokens("tok_insufficient_funds"))
    assert response.status_code == 402
    charge_id = response.json()["error"]["charge"]
    assert await attempts(runtime, merchant.id, charge_id) == [("sandbox", "declined")]
    assert await books(runtime, charge_id) == [("sandbox", "declined")]


async def test_a_soft_decline_stops_unless_cascadable(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, two_tokens("tok_try_again_later"))
    assert response.status_code == 402
    assert await attempts(runtime, merchant.id, response.json()["error"]["charge"]) == [("sandbox", "declined")]


async def test_an_unknown_outcome_never_fails_over(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, two_tokens("tok_timeout"))
    assert response.status_code == 202
    charge = response.json()
    assert charge["status"] == "processing"
    assert await attempts(runtime, merchant.id, charge["id"]) == [("sandbox", "unknown")]

    async def resolved() -> bool:
        await runtime.reconciler.run_once()
        fetched = (await client.get(f"/v1/charges/{charge['id']}", headers=merchant.headers)).json()
        return bool(fetched["status"] == "succeeded")

    await wait_for(resolved)
    assert await books(runtime, charge["id"]) == [("sandbox", "captured")]
    assert await attempts(runtime, merchant.id, charge["id"]) == [("sandbox", "approved")]


@pytest.mark.parametrize("capture", [True, False], ids=["capture", "authorization"])
@pytest.mark.parametrize("settled_by", ["its_late_answer", "a_lookup_once_that_answer_was_lost"])
async def test_a_late_success_settles_as_exactly_what_was_asked(
    runtime: Runtime, capture: bool, settled_by: str
) -> None:
    """Whoever settles a ``tok_timeout`` payment (its own late answer, or another process's lookup
    once the answering process stopped) settles it as the capture or authorization requested."""
    books = SandboxLedger(runtime.db)
    request = PaymentRequest(new_id("att"), "mer_late", new_id("ch"), 1200, "usd", "tok_timeout", capture=capture)
    if settled_by == "its_late_answer":
        found = await SandboxGateway("sandbox", books, timeout=0).authorize(request)
    else:
        # The process that took the payment stops long before its late answer is due.
        answering = SandboxGateway("sandbox", books, timeout=60)
        pending = asyncio.create_task(answering.authorize(request))
        await wait_for(lambda: books.find("sandbox", request.attempt_id))
        pending.cancel()
        await answering.aclose()
        looking = SandboxGateway("sandbox", books, timeout=0)

        async def settled() -> GatewayResult | None:
            result = await looking.lookup(request)
            return None if result.outcome is Outcome.UNKNOWN else result

        found = await wait_for(settled)
    assert (found.outcome, found.captured) == (Outcome.APPROVED, capture)
    payment = await books.find("sandbox", request.attempt_id)
    assert payment is not None
    assert (payment.status, payment.amount_captured) == (("captured", 1200) if capture else ("authorized", 0))


async def test_a_crash_between_gateway_and_database_is_resolved(runtime: Runtime) -> None:
    """The gateway charged, then the process died before the result was written: the pending attempt
    is found by the reconciler once stale, and the charge takes the gateway's truth."""
    merchant = await create_merchant(runtime)
    charge_id, attempt_id = new_id("ch"), new_id("att")
    await insert_pending_charge(
        runtime,
        NewCharge(
            id=charge_id,
            merchant_id=merchant.id,
            livemode=False,
            amount=700,
            currency="usd",
            capture=True,
            payment_method=None,
            description=None,
        ),
        attempt_id=attempt_id,
        gateway="sandbox",
        token="tok_visa",
    )
    sandbox = runtime.registry.get("sandbox")
    assert sandbox is not None
    charged = await sandbox.gateway.authorize(
        PaymentRequest(attempt_id, merchant.id, charge_id, 700, "usd", "tok_visa")
    )
    assert charged.charged
    # Not yet stale: a live request may still be writing its result.
    assert all(d.object_id != attempt_id for d in await runtime.reconciler.run_once())
    await query(
        runtime.db,
        "UPDATE charge_attempts SET created_at = now() - interval '10 minutes' WHERE merchant_id = :m AND id = :a",
        m=merchant.id,
        a=attempt_id,
    )
    decisions = await runtime.reconciler.run_once()
    assert [d.action for d in decisions if d.object_id == attempt_id] == ["resolved"]
    async with runtime.db.connection() as connection:
        charge = await repo.get_charge(connection, merchant.id, charge_id)
    assert charge is not None
    assert charge.status == "succeeded"
    assert charge.gateway_reference == charged.reference


async def test_a_crash_before_the_gateway_call_fails_the_charge_safely(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    charge_id, attempt_id = new_id("ch"), new_id("att")
    await insert_pending_charge(
        runtime,
        NewCharge(
            id=charge_id,
            merchant_id=merchant.id,
            livemode=False,
            amount=700,
            currency="usd",
            capture=True,
            payment_method=None,
            description=None,
        ),
        attempt_id=attempt_id,
        gateway="sandbox",
        token="tok_visa",
    )
    await query(
        runtime.db,
        "UPDATE charge_attempts SET created_at = now() - interval '10 minutes' WHERE merchant_id = :m AND id = :a",
        m=merchant.id,
        a=attempt_id,
    )
    await runtime.reconciler.run_once()
    async with runtime.db.connection() as connection:
        charge = await repo.get_charge(connection, merchant.id, charge_id)
    assert charge is not None
    assert charge.status == "failed"
    assert charge.failure_code == "gateway_unavailable"
    assert await books(runtime, charge_id) == []


async def test_an_attempt_that_stays_unknown_is_flagged_for_review(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    response = await post_charge(client, merchant, two_tokens("tok_timeout"))
    charge_id = response.json()["id"]
    # Lookups keep answering "still processing" by pretending the payment just arrived.
    await query(
        runtime.db,
        "UPDATE charge_attempts SET check_count = 100, next_check_at = now() WHERE merchant_id = :m AND charge_id = :c",
        m=merchant.id,
        c=charge_id,
    )
    decisions = [d for d in await runtime.reconciler.run_once() if d.charge_id == charge_id]
    assert [d.action for d in decisions] in (["review"], ["resolved"])
