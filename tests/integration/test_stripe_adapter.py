"""What only the Stripe adapter does, against the fake through the real SDK (the shared contract is in
test_gateway_contract.py)."""

from __future__ import annotations

import time

import pytest
from tests.fakes.drivers import GatewayDriver
from tests.fakes.ledger_drivers import stripe_event
from tests.fakes.stripe_server import StripeFake

from payorch.gateways.base import Gateway, GatewayError, Outcome, PaymentRequest


@pytest.fixture
def gateway_kind() -> str:
    return "stripe"


async def test_a_payment_intent_carries_our_ids_in_its_metadata(
    adapter: Gateway, driver: GatewayDriver, stripe_fake: StripeFake
) -> None:
    request = driver.request()

    assert (await adapter.authorize(request)).outcome is Outcome.APPROVED

    [charge] = stripe_fake.charges_for(request.attempt_id)
    assert charge.currency == "usd"
    assert charge.metadata == {
        "merchant_id": "mer_1",
        "charge_id": request.charge_id,
        "attempt_id": request.attempt_id,
    }


async def test_a_refund_answers_with_the_refund_id(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()
    charged = await adapter.authorize(request)

    refunded = await adapter.refund(str(charged.reference), 200, "usd", f"re_{request.attempt_id}")

    assert refunded.reference is not None
    assert refunded.reference.startswith("re_")


async def test_a_key_reused_with_other_parameters_is_unknown_and_charges_nothing_more(
    adapter: Gateway, driver: GatewayDriver, stripe_fake: StripeFake
) -> None:
    request = driver.request()
    await adapter.authorize(request)
    altered = PaymentRequest(**{**_fields(request), "amount": 9999})

    result = await adapter.authorize(altered)

    assert result.outcome is Outcome.UNKNOWN
    [charge] = stripe_fake.charges_for(request.attempt_id)
    assert charge.amount == 1500


def _fields(request: PaymentRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in PaymentRequest.__slots__}


async def test_a_vaulted_payment_method_is_a_pm_that_vaults_as_itself(adapter: Gateway) -> None:
    vaulted = await adapter.vault("tok_mastercard", "pm_ours_1")
    assert vaulted.token is not None
    assert vaulted.token.startswith("pm_")
    assert vaulted.card is not None
    assert vaulted.card.exp_month == 12

    checked = await adapter.vault(vaulted.token, "pm_ours_2")

    assert checked.token == vaulted.token


async def test_a_stale_webhook_is_refused(adapter: Gateway) -> None:
    headers, body = stripe_event(timestamp=int(time.time()) - 3600)

    with pytest.raises(GatewayError):
        await adapter.parse_webhook(headers, body)


async def test_a_webhook_without_its_signature_header_is_refused(adapter: Gateway) -> None:
    _, body = stripe_event()

    with pytest.raises(GatewayError):
        await adapter.parse_webhook({}, body)
