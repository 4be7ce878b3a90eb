"""A fault-injection run of the challenge flow at Stripe (the fake): many charges wait for their
customers; some customers complete, some fail, some never come back; the merchant confirms each while
the gateway hangs, resets, answers 500 or garbage on the confirm, and retries as a client would.
Then every authentication reaches its expiry and the reconciler runs until none waits.

What must hold: no PaymentIntent is captured twice (or more than its amount), none is left
``requires_action`` past its expiry, and every charge ends as its customer and the gateway say.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest
from tests.factories import create_merchant
from tests.fakes.stripe_server import Fault, StripeFake
from tests.integration.orchestration_support import wait_for
from tests.integration.stripe_authentication_support import expire_now, statuses, stripe_app, waiting_charge

CHARGES = 18
CONFIRM_FAULTS = [
    Fault.HANG,
    Fault.ERROR_500_AFTER_CHARGE,
    Fault.RESET_AFTER_CHARGE,
    Fault.GARBAGE_AFTER_CHARGE,
    Fault.RESET_BEFORE_CHARGE,
    Fault.ERROR_503_BEFORE_CHARGE,
]
# What each customer does: completes, fails, or never comes back.
BEHAVIOURS = ["complete", "fail", "abandon"]


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


async def test_confirms_under_faults_never_capture_twice_nor_leave_a_charge_waiting(
    database_url: str, fake: StripeFake
) -> None:
    async with stripe_app(database_url, fake, timeout_ms=300, reconciler={"first_check_seconds": 0}) as app:
        runtime, client = app
        merchant = await create_merchant(runtime)
        charges = [await waiting_charge(client, merchant) for _ in range(CHARGES)]
        plans = dict(zip((c["id"] for c in charges), itertools.cycle(BEHAVIOURS), strict=False))
        faults = itertools.cycle(CONFIRM_FAULTS)
        answers: dict[int, int] = {}
        for charge in charges:
            behaviour = plans[charge["id"]]
            if behaviour != "abandon":
                assert fake.authenticate(charge["gateway_reference"], succeed=behaviour == "complete")
            # The first confirm meets a fault; a client retries a 502/503 once, unharmed.
            fake.inject(next(faults))
            first = await _confirm(client, merchant.headers, charge["id"])
            fake.clear_faults()
            answers[first.status_code] = answers.get(first.status_code, 0) + 1
            if first.status_code in (502, 503):
                retried = await _confirm(client, merchant.headers, charge["id"])
                assert retried.status_code in (200, 202, 402), retried.text
        assert set(answers) <= {200, 202, 402, 502, 503}, answers
        assert answers.get(502, 0) > 0  # the faults did reach the confirms

        ids = list(plans)
        await expire_now(runtime, ids)

        async def none_waiting() -> bool:
            await runtime.reconciler.run_once()
            return "requires_action" not in (await statuses(runtime, ids)).values()

        await wait_for(none_waiting, timeout=60)
        final = await statuses(runtime, ids)

    expected = {"complete": "succeeded", "fail": "failed", "abandon": "canceled"}
    assert final == {charge_id: expected[plans[charge_id]] for charge_id in ids}
    intents = {c["gateway_reference"]: plans[c["id"]] for c in charges}
    for payment in fake.ledger:
        if payment.reference not in intents:
            continue
        assert payment.amount_captured <= payment.amount, payment
        wanted = {"complete": "succeeded", "fail": "requires_payment_method", "abandon": "canceled"}
        assert payment.status == wanted[intents[payment.reference]], payment
    captured_per_attempt: dict[str, int] = {}
    for payment in fake.ledger:
        attempt = payment.metadata.get("attempt_id", "")
        captured_per_attempt[attempt] = captured_per_attempt.get(attempt, 0) + (payment.amount_captured > 0)
    assert max(captured_per_attempt.values()) <= 1


async def _confirm(client: httpx.AsyncClient, headers: dict[str, str], charge_id: str) -> httpx.Response:
    return await client.post(f"/v1/charges/{charge_id}/confirm", headers=headers)
