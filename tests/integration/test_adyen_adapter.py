"""What only the Adyen adapter does, over real HTTP against the Checkout fake (the shared contract is in
test_gateway_contract.py)."""

from __future__ import annotations

import json

import pytest
from tests.fakes.adyen_server import AdyenFake, encrypted_card
from tests.fakes.drivers import GatewayDriver

from payorch.gateways.base import Gateway, GatewayError, Outcome


@pytest.fixture
def gateway_kind() -> str:
    return "adyen"


async def test_a_payment_carries_our_reference_and_metadata(
    adapter: Gateway, driver: GatewayDriver, adyen_fake: AdyenFake
) -> None:
    request = driver.request()

    result = await adapter.authorize(request)

    assert result.card is not None
    assert result.card.exp_year == 2030
    [charge] = adyen_fake.charges_for(request.attempt_id)
    assert (charge.amount, charge.currency) == (2500, "EUR")
    assert charge.metadata["charge_id"] == request.charge_id


async def test_a_capture_then_refund_leaves_the_payment_captured(
    adapter: Gateway, driver: GatewayDriver, adyen_fake: AdyenFake
) -> None:
    request = driver.request(capture=False)
    reference = str((await adapter.authorize(request)).reference)

    assert (await adapter.capture(reference, 2000, "eur", f"cap_{request.attempt_id}")).charged
    assert (await adapter.refund(reference, 500, "eur", f"re_{request.attempt_id}")).charged

    [charge] = adyen_fake.charges_for(request.attempt_id)
    assert (charge.status, charge.amount_captured, charge.refunds) == ("captured", 2000, [500])


async def test_received_is_unknown_until_the_webhook(adapter: Gateway, driver: GatewayDriver) -> None:
    result = await adapter.authorize(driver.request(encrypted_card("RECEIVED")))

    assert result.outcome is Outcome.UNKNOWN
    assert result.code == "Received"


async def test_raw_card_numbers_are_refused_before_sending(
    adapter: Gateway, driver: GatewayDriver, adyen_fake: AdyenFake
) -> None:
    before = adyen_fake.request_count
    raw = json.dumps({"type": "scheme", "number": "4111111111111111", "cvc": "737"})

    result = await adapter.authorize(driver.request(raw))

    assert result.outcome is Outcome.NOT_SENT
    assert adyen_fake.request_count == before


async def test_a_vaulted_card_is_stored_under_the_vault_key(adapter: Gateway) -> None:
    vaulted = await adapter.vault(encrypted_card(number_hint="5"), "pm_ours_1")

    assert vaulted.token is not None
    assert vaulted.token.startswith("stored:pm_ours_1:")


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"notificationItems": [{"NotificationRequestItem": {}}]}'])
async def test_malformed_webhooks_are_refused(adapter: Gateway, body: bytes) -> None:
    with pytest.raises(GatewayError):
        await adapter.parse_webhook({}, body)


def test_a_live_account_needs_its_own_endpoint(driver: GatewayDriver) -> None:
    with pytest.raises(ValueError, match="base_url"):
        driver.build(environment="live", base_url=None)
