"""What only the Braintree adapter does, driving the real SDK against the fake (the shared contract is
in test_gateway_contract.py): decimal amounts, settlement, searches, vaulting by key, signed forms."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from pydantic import SecretStr
from tests.fakes.braintree_server import BraintreeFake, Fault
from tests.fakes.drivers import GatewayDriver

from payorch.gateways.base import Authentication, CardSummary, CustomerPresence, Gateway, GatewayError, Outcome
from payorch.gateways.braintree.adapter import BraintreeAdapter
from payorch.gateways.braintree.config import BraintreeConfig


@pytest.fixture
def gateway_kind() -> str:
    return "braintree"


async def test_a_sale_is_sent_in_major_units_and_submitted_for_settlement(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    request = driver.request(amount=1050)
    result = await adapter.authorize(request)
    assert result.card == CardSummary(
        brand="visa", last4="1111", exp_month=12, exp_year=2030, bin="411111", country="US"
    )
    [charged] = braintree_fake.transactions_for(request.attempt_id)
    assert (charged.id, charged.amount, charged.status) == (
        result.reference,
        Decimal("10.50"),
        "submitted_for_settlement",
    )


async def test_a_zero_decimal_currency_is_sent_in_major_units(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    request = driver.request(amount=500, currency="jpy")
    assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
    assert braintree_fake.transactions_for(request.attempt_id)[0].amount == Decimal(500)


async def test_a_partial_capture_settles_that_amount(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    authorized = await adapter.authorize(driver.request(capture=False))
    assert braintree_fake.transaction(str(authorized.reference)).status == "authorized"

    assert (await adapter.capture(str(authorized.reference), 600, "usd", "cap_1")).charged

    ledger = braintree_fake.transaction(str(authorized.reference))
    assert (ledger.status, ledger.amount) == ("submitted_for_settlement", Decimal("6.00"))


async def test_a_refund_carries_its_key_as_order_id(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    sale = await adapter.authorize(driver.request())
    braintree_fake.settle(str(sale.reference))
    result = await adapter.refund(str(sale.reference), 400, "usd", "re_key_1")
    assert result.outcome is Outcome.APPROVED
    refund = braintree_fake.transaction(str(result.reference))
    assert (refund.type, refund.amount, refund.order_id) == ("credit", Decimal("4.00"), "re_key_1")
    assert refund.refunded_transaction_id == sale.reference


async def test_a_refund_of_an_unsettled_sale_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    sale = await adapter.authorize(driver.request())
    result = await adapter.refund(str(sale.reference), 1000, "usd", "re_key_3")
    assert (result.outcome, result.code) == (Outcome.HARD_DECLINE, "91506")


@pytest.mark.parametrize(
    ("operation", "fault"),
    [
        ("search_ids", Fault.ERROR_500_AFTER_CHARGE),
        ("search_ids", Fault.ERROR_503_BEFORE_CHARGE),
        ("search", Fault.GARBAGE_AFTER_CHARGE),
        ("search_ids", Fault.HANG),
    ],
)
async def test_a_failing_search_makes_lookup_unknown(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake, operation: str, fault: Fault
) -> None:
    request = driver.request()
    assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
    braintree_fake.inject(fault, operation=operation)
    assert (await adapter.lookup(request)).outcome is Outcome.UNKNOWN
    assert (await adapter.lookup(request)).outcome is Outcome.APPROVED  # once the fault has passed


async def test_capture_and_refund_faults_are_unknown_or_not_sent(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    authorized = await adapter.authorize(driver.request(capture=False))
    reference = str(authorized.reference)
    braintree_fake.inject(Fault.ERROR_503_BEFORE_CHARGE, operation="submit_for_settlement")
    assert (await adapter.capture(reference, 1000, "usd", "cap_5")).outcome is Outcome.NOT_SENT
    braintree_fake.inject(Fault.RESET_AFTER_CHARGE, operation="submit_for_settlement")
    assert (await adapter.capture(reference, 1000, "usd", "cap_5")).outcome is Outcome.UNKNOWN
    await braintree_fake.until_idle()
    assert braintree_fake.transaction(reference).status == "submitted_for_settlement"
    braintree_fake.settle(reference)
    braintree_fake.inject(Fault.ERROR_500_AFTER_CHARGE, operation="refund")
    assert (await adapter.refund(reference, 1000, "usd", "re_key_4")).outcome is Outcome.UNKNOWN
    [refund] = [t for t in braintree_fake.ledger if t.order_id == "re_key_4"]
    assert refund.refunded_transaction_id == reference


# --- vault -------------------------------------------------------------------------------------------


async def test_a_vaulted_card_charges_again_and_again(
    adapter: Gateway, driver: GatewayDriver, braintree_fake: BraintreeFake
) -> None:
    vaulted = await adapter.vault("fake-valid-mastercard-nonce", f"vault_{uuid.uuid4().hex}")
    assert vaulted.card == CardSummary(
        brand="mastercard", last4="4444", exp_month=12, exp_year=2030, bin="555555", country="US"
    )
    assert vaulted.token is not None

    for _ in range(2):
        request = driver.request(vaulted.token)
        assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
        [sale] = braintree_fake.transactions_for(request.attempt_id)
        assert (sale.payment_method_token, sale.card.last_4) == (vaulted.token, "4444")


async def test_a_replayed_vault_returns_the_same_token(adapter: Gateway) -> None:
    key = f"vault_{uuid.uuid4().hex}"
    first = await adapter.vault("fake-valid-nonce", key)
    again = await adapter.vault("fake-valid-nonce", key)
    assert first.outcome is again.outcome is Outcome.APPROVED
    assert first.token == again.token


async def test_a_vault_replayed_after_the_nonce_was_spent_returns_the_stored_card(adapter: Gateway) -> None:
    key = f"vault_{uuid.uuid4().hex}"
    first = await adapter.vault("fake-valid-amex-nonce", key)
    # A real nonce is single use: the replay of a lost answer finds it spent.
    again = await adapter.vault("fake-consumed-nonce", key)
    assert (again.outcome, again.token, again.card) == (Outcome.APPROVED, first.token, first.card)


# --- webhooks ----------------------------------------------------------------------------------------


async def test_a_notification_id_is_stable_across_redeliveries(adapter: Gateway, driver: GatewayDriver) -> None:
    signed = await driver.signed_notification(adapter)
    first = await adapter.parse_webhook(signed.headers, signed.body)
    assert first.event_id == (await adapter.parse_webhook({}, signed.body)).event_id  # for deduplication


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"bt_signature=x",
        b"\xff\xfe",
        b"bt_signature=fake_public_key%7Cabc&bt_payload=PG5vdGlmaWNhdGlvbi8%2B",
    ],
)
async def test_malformed_notifications_are_refused(adapter: Gateway, body: bytes) -> None:
    with pytest.raises(GatewayError):
        await adapter.parse_webhook({}, body)


# --- configuration -----------------------------------------------------------------------------------


def test_missing_credentials_are_refused_by_the_config(driver: GatewayDriver) -> None:
    with pytest.raises(ValueError, match="public_key"):
        driver.config(public_key=None)
    with pytest.raises(ValueError, match="private_key"):
        driver.config(private_key="")


def test_an_https_base_url_off_port_443_is_refused(driver: GatewayDriver) -> None:
    config = driver.config(base_url="https://127.0.0.1:8443")
    assert isinstance(config, BraintreeConfig)
    with pytest.raises(ValueError, match="443"):
        BraintreeAdapter(config)


def test_the_private_key_is_a_secret(driver: GatewayDriver) -> None:
    config = driver.config()
    assert isinstance(config, BraintreeConfig)
    assert isinstance(config.private_key, SecretStr)
    assert dict(config.secrets()) == {"private_key": config.private_key}


async def test_a_nonce_carries_its_three_d_secure_result_onto_the_charge(
    adapter: Gateway, driver: GatewayDriver
) -> None:
    shifted = await adapter.authorize(driver.request("fake-three-d-secure-visa-full-authentication-nonce"))
    plain = await adapter.authorize(driver.request("fake-valid-nonce"))

    assert shifted.outcome is Outcome.APPROVED
    assert shifted.authentication == Authentication("succeeded", "2.2.0", liability_shifted=True)
    assert shifted.network_transaction_id
    assert plain.outcome is Outcome.APPROVED
    assert plain.authentication is None


async def test_required_three_d_secure_rejects_a_nonce_without_it(driver: GatewayDriver) -> None:
    adapter = driver.build(three_d_secure_required=True)
    try:
        plain = await adapter.authorize(driver.request("fake-valid-nonce"))
        failed = await adapter.authorize(driver.request("fake-three-d-secure-visa-failed-authentication-nonce"))
        shifted = await adapter.authorize(driver.request("fake-three-d-secure-visa-full-authentication-nonce"))
        off_session = await adapter.authorize(
            driver.request("fake-valid-nonce", presence=CustomerPresence(off_session=True))
        )
    finally:
        await adapter.aclose()

    assert (plain.outcome, plain.decline_code) == (Outcome.HARD_DECLINE, "authentication_required")
    assert (failed.outcome, failed.decline_code) == (Outcome.HARD_DECLINE, "authentication_required")
    assert failed.authentication is not None
    assert failed.authentication.liability_shifted is False
    assert shifted.outcome is Outcome.APPROVED
    # A merchant-initiated charge has no customer to authenticate: it is never asked for.
    assert off_session.outcome is Outcome.APPROVED
