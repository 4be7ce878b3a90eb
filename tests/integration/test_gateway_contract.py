"""The adapter contract, once, against every gateway fake (Stripe, Braintree, Adyen) through the real
SDK or client, each adapter built by its plugin. What the gateways legitimately answer differently
(a refusal's code, whether a 503 states that nothing ran) each driver declares (tests/fakes/).

Checks specific to one gateway live in tests/integration/test_{stripe,braintree,adyen}_adapter.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from _pytest.mark import ParameterSet
from tests.fakes.drivers import Expect, GatewayDriver
from tests.fakes.fixtures import DRIVERS

from payorch.gateways.base import (
    CustomerPresence,
    Gateway,
    GatewayError,
    GatewayResult,
    Outcome,
    PaymentRequest,
    VaultResult,
)
from payorch.gateways.registry import plugin_for
from payorch.ids import new_id


def cases(table: Callable[[type[GatewayDriver]], Iterable[Any]]) -> list[ParameterSet]:
    """(gateway_kind, case) for every driver's entries in ``table``."""
    return [
        pytest.param(kind, case, id=f"{kind}-{_id(case)}") for kind, driver in DRIVERS.items() for case in table(driver)
    ]


def kinds(where: Callable[[type[GatewayDriver]], bool]) -> list[str]:
    return [kind for kind, driver in DRIVERS.items() if where(driver)]


def _id(case: Any) -> str:
    if isinstance(case, str):
        return case
    token = getattr(case, "token", None) or (case[0] if isinstance(case, tuple) else "")
    amount = getattr(case, "amount", "")
    return f"{str(token)[:40]}-{amount}"


def expect(result: GatewayResult | VaultResult, expected: Expect) -> None:
    assert result.outcome is expected.outcome, result
    if expected.code is not None:
        assert result.code == expected.code, result


# -- the plugin -----------------------------------------------------------------------------------


def test_the_adapter_is_a_gateway_named_as_configured(adapter: Gateway, driver: GatewayDriver) -> None:
    assert isinstance(adapter, Gateway)
    assert adapter.name == driver.kind


def test_the_plugin_declares_what_its_adapter_does(driver: GatewayDriver) -> None:
    capabilities = plugin_for(driver.kind).capabilities
    exercised = ("authorize", "partial_capture", "void", "refund", "vault", "lookup", "notifications")
    assert all(getattr(capabilities, name) for name in exercised)
    # No adapter captures an authorization twice. Braintree's 3-D Secure happens in its client SDK
    # before the nonce exists, so it never sends a customer anywhere; the others do (exercised below).
    assert not capabilities.multiple_captures
    assert capabilities.customer_authentication is (driver.kind in AUTHENTICATING)


# -- charge, authorize, capture, refund, void -----------------------------------------------------


async def test_a_charge_is_captured_under_the_attempt_id(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()

    result = await adapter.authorize(request)

    assert (result.outcome, result.captured) == (Outcome.APPROVED, True)
    assert result.card is not None
    assert (result.card.brand, result.card.last4) == driver.approved_card
    [booked] = driver.booked(request.attempt_id)
    assert (booked.reference, booked.key) == (result.reference, request.attempt_id)
    assert (booked.amount_captured, booked.holds_money) == (request.amount, True)


@pytest.mark.parametrize("gateway_kind", kinds(lambda d: d.replays_by_key))
async def test_the_same_attempt_twice_charges_once(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()

    first = await adapter.authorize(request)
    second = await adapter.authorize(request)

    assert first.outcome is second.outcome is Outcome.APPROVED
    assert first.reference == second.reference
    assert len(driver.booked(request.attempt_id)) == 1


async def test_authorize_only_then_capture_part(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request(capture=False)
    authorized = await adapter.authorize(request)
    assert (authorized.outcome, authorized.captured) == (Outcome.APPROVED, False)
    reference = str(authorized.reference)
    held = driver.booked_payment(reference)
    assert (held.holds_money, held.amount_captured) == (True, 0)

    part = request.amount * 4 // 5
    captured = await adapter.capture(reference, part, driver.currency, f"cap_{request.attempt_id}")
    replayed = await adapter.capture(reference, part, driver.currency, f"cap_{request.attempt_id}")

    assert (captured.outcome, captured.captured) == (Outcome.APPROVED, driver.capture_confirms)
    assert replayed.outcome is Outcome.APPROVED  # a replay is confirmed, not refused
    assert driver.booked_payment(reference).amount_captured == part


async def test_a_capture_above_the_authorization_is_refused_without_effect(
    adapter: Gateway, driver: GatewayDriver
) -> None:
    request = driver.request(capture=False)
    reference = str((await adapter.authorize(request)).reference)

    refused = await adapter.capture(reference, request.amount + 1, driver.currency, f"cap_{request.attempt_id}")

    expect(refused, driver.capture_above_authorized)
    held = driver.booked_payment(reference)
    assert (held.holds_money, held.amount_captured) == (True, 0)


async def test_a_capture_of_an_unknown_payment_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    expect(await adapter.capture("nosuchpayment", 100, driver.currency, new_id("cap")), driver.capture_unknown_payment)


async def test_refunds_up_to_what_was_captured(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request(capture=False)
    reference = str((await adapter.authorize(request)).reference)
    captured = request.amount * 4 // 5
    assert (await adapter.capture(reference, captured, driver.currency, f"cap_{request.attempt_id}")).charged
    driver.settle(reference)

    first = await adapter.refund(reference, 200, driver.currency, f"re1_{request.attempt_id}")
    second = await adapter.refund(reference, 300, driver.currency, f"re2_{request.attempt_id}")
    too_much = await adapter.refund(reference, captured - 499, driver.currency, f"re3_{request.attempt_id}")

    assert first.outcome is second.outcome is Outcome.APPROVED
    assert first.reference is not None
    assert first.reference != second.reference
    expect(too_much, driver.refund_too_large)
    booked = driver.booked_payment(reference)
    assert (booked.amount_captured, booked.refunds) == (captured, [200, 300])


@pytest.mark.parametrize("gateway_kind", kinds(lambda d: d.replays_by_key))
async def test_a_replayed_refund_refunds_once(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()
    reference = str((await adapter.authorize(request)).reference)

    refunded = await adapter.refund(reference, 300, driver.currency, f"re_{request.attempt_id}")
    again = await adapter.refund(reference, 300, driver.currency, f"re_{request.attempt_id}")

    assert refunded.outcome is again.outcome is Outcome.APPROVED
    assert again.reference == refunded.reference
    assert driver.booked_payment(reference).refunds == [300]


async def test_a_void_releases_the_authorization_once(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request(capture=False)
    reference = str((await adapter.authorize(request)).reference)

    voided = await adapter.void(reference, f"void_{request.attempt_id}")
    replayed = await adapter.void(reference, f"void_{request.attempt_id}")

    assert voided.outcome is replayed.outcome is Outcome.APPROVED
    booked = driver.booked_payment(reference)
    assert (booked.voided, booked.holds_money, booked.amount_captured) == (True, False, 0)


async def test_a_void_of_a_captured_payment_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()
    reference = str((await adapter.authorize(request)).reference)
    driver.settle(reference)

    expect(await adapter.void(reference, f"void_{request.attempt_id}"), driver.void_captured)
    booked = driver.booked_payment(reference)
    assert (booked.voided, booked.amount_captured) == (False, request.amount)


# -- declines and refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(("gateway_kind", "decline"), cases(lambda d: d.declines))
async def test_declines(adapter: Gateway, driver: GatewayDriver, decline: Any) -> None:
    request = driver.request(decline.token, amount=decline.amount)

    result = await adapter.authorize(request)

    assert (result.outcome, result.decline_code) == (decline.outcome, decline.decline_code)
    if decline.code is not None:
        assert result.code == decline.code
    booked = driver.booked(request.attempt_id)
    assert not any(payment.holds_money for payment in booked)
    assert [payment.reference for payment in booked] == ([result.reference] if result.reference else [])
    assert all(payment.amount_captured == 0 for payment in booked)


async def test_a_token_the_gateway_cannot_use_charges_nothing(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request(driver.unusable_token)

    expect(await adapter.authorize(request), driver.unusable_token_result)
    assert driver.booked(request.attempt_id) == []


async def test_a_lookup_of_an_attempt_that_never_ran_is_not_sent(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request(driver.unusable_token)

    assert (await adapter.lookup(request)).outcome is Outcome.NOT_SENT
    assert driver.booked(request.attempt_id) == []


@pytest.mark.parametrize("lost", [False, True], ids=["answered", "lost_in_a_reset"])
async def test_a_lookup_of_a_declined_attempt_reports_the_decline(
    adapter: Gateway, driver: GatewayDriver, lost: bool
) -> None:
    token, amount = driver.insufficient_funds
    request = driver.request(token, amount=amount)
    if lost:
        driver.inject("reset_after_charge")
        assert (await adapter.authorize(request)).outcome is Outcome.UNKNOWN
    else:
        assert (await adapter.authorize(request)).outcome is Outcome.HARD_DECLINE

    found = await adapter.lookup(request)

    assert (found.outcome, found.decline_code) == (Outcome.HARD_DECLINE, "insufficient_funds")


async def test_wrong_credentials_are_not_sent(driver: GatewayDriver) -> None:
    overrides, expected = driver.wrong_credentials
    adapter = driver.build(**overrides)
    request = driver.request()
    try:
        expect(await adapter.authorize(request), expected)
    finally:
        await adapter.aclose()
    assert driver.booked(request.attempt_id) == []


async def test_a_refused_connection_is_not_sent_and_its_lookup_unknown(driver: GatewayDriver) -> None:
    adapter = driver.build(base_url=driver.closed_base_url())
    request = driver.request()
    try:
        expect(await adapter.authorize(request), Expect(Outcome.NOT_SENT, driver.connect_refused_code))
        # A lookup that cannot reach the gateway says nothing about the attempt.
        assert (await adapter.lookup(request)).outcome is Outcome.UNKNOWN
    finally:
        await adapter.aclose()


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gateway_kind", "fault"), cases(lambda d: d.faults))
async def test_a_fault_gives_its_outcome_and_a_lookup_finds_the_truth(
    adapter: Gateway, driver: GatewayDriver, fault: str
) -> None:
    case = driver.faults[fault]
    request = driver.request()
    before = driver.request_count()
    driver.inject(fault)

    result = await adapter.authorize(request)

    assert result.outcome is case.outcome, result
    if case.code is not None:
        assert result.code == case.code
    if fault == "late_success" and driver.in_flight_code is not None:
        in_flight = await adapter.lookup(request)
        assert (in_flight.outcome, in_flight.code) == (Outcome.UNKNOWN, driver.in_flight_code)
        driver.release()
    # The fake took the request (and its fault) and has played it out: a held request saw its
    # client leave, a late success landed.
    await driver.until(lambda: driver.request_count() > before)
    await driver.until(lambda: bool(driver.booked(request.attempt_id)) is case.charged)
    await driver.until_idle()
    assert bool(driver.booked(request.attempt_id)) is case.charged

    found = await adapter.lookup(request)

    booked = driver.booked(request.attempt_id)
    # Never charged twice, not even by a lookup that replays the attempt.
    assert len(booked) == (1 if case.charged or driver.lookup_replays else 0)
    if booked:
        assert (found.outcome, found.reference, found.captured) == (Outcome.APPROVED, booked[0].reference, True)
        assert booked[0].amount_captured == request.amount
    else:
        assert found.outcome is Outcome.NOT_SENT


async def test_a_refused_lookup_is_unknown_never_not_sent(adapter: Gateway, driver: GatewayDriver) -> None:
    request = driver.request()
    driver.inject("reset_after_charge")
    assert (await adapter.authorize(request)).outcome is Outcome.UNKNOWN
    driver.inject("rate_limited", on="lookup")

    # The lookup was rate limited, which says nothing about the attempt (which charged).
    assert (await adapter.lookup(request)).outcome is Outcome.UNKNOWN
    assert len(driver.booked(request.attempt_id)) == 1


@pytest.mark.parametrize("fault", ["error_500_after_charge", "error_503_before_charge"])
async def test_a_fault_on_one_card_leaves_other_cards_alone(
    adapter: Gateway, driver: GatewayDriver, fault: str
) -> None:
    driver.inject(fault, token=driver.other_approve_token)

    broken = await adapter.authorize(driver.request(driver.other_approve_token))
    working = await adapter.authorize(driver.request())

    assert broken.outcome is driver.faults[fault].outcome
    assert working.outcome is Outcome.APPROVED


# -- vault ----------------------------------------------------------------------------------------


async def test_a_vaulted_token_charges_the_same_card(adapter: Gateway, driver: GatewayDriver) -> None:
    vaulted = await adapter.vault(driver.vault_source, new_id("pm"))
    assert vaulted.outcome is Outcome.APPROVED
    assert vaulted.token is not None
    assert vaulted.card is not None
    assert (vaulted.card.brand, vaulted.card.last4) == driver.vault_card

    request = driver.request(vaulted.token)
    charged = await adapter.authorize(request)

    assert (charged.outcome, charged.card) == (Outcome.APPROVED, vaulted.card)
    [booked] = driver.booked(request.attempt_id)
    assert booked.amount_captured == request.amount


@pytest.mark.parametrize(("gateway_kind", "refusal"), cases(lambda d: d.vault_refusals))
async def test_a_vault_refusal_gives_no_token(adapter: Gateway, refusal: tuple[str, Expect]) -> None:
    token, expected = refusal

    result = await adapter.vault(token, new_id("pm"))

    expect(result, expected)
    assert result.token is None


@pytest.mark.parametrize(
    ("gateway_kind", "fault"), cases(lambda d: [f for f, case in d.faults.items() if case.outcome is Outcome.NOT_SENT])
)
async def test_a_vault_the_gateway_says_it_never_ran_is_not_sent(
    adapter: Gateway, driver: GatewayDriver, fault: str
) -> None:
    driver.inject(fault, on="vault")

    assert (await adapter.vault(driver.vault_source, new_id("pm"))).outcome is Outcome.NOT_SENT


# -- notifications --------------------------------------------------------------------------------


async def test_a_signed_notification_is_decoded(adapter: Gateway, driver: GatewayDriver) -> None:
    signed = await driver.signed_notification(adapter)

    notification = await adapter.parse_webhook(signed.headers, signed.body)

    expected = signed.expected
    assert (notification.kind, notification.attempt_id, notification.reference, notification.amount) == (
        expected.kind,
        expected.attempt_id,
        expected.reference,
        expected.amount,
    )
    if expected.event_id is not None:
        assert notification.event_id == expected.event_id


async def test_a_notification_signed_with_another_key_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    signed = await driver.signed_notification(adapter, by_us=False)

    with pytest.raises(GatewayError, match=driver.unverified):
        await adapter.parse_webhook(signed.headers, signed.body)


async def test_a_tampered_notification_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    signed = await driver.signed_notification(adapter)

    with pytest.raises(GatewayError, match=driver.unverified):
        await adapter.parse_webhook(signed.headers, driver.tamper(signed.body))


@pytest.mark.parametrize("gateway_kind", kinds(lambda d: d.notification_secret is not None))
async def test_without_its_secret_every_notification_is_refused(adapter: Gateway, driver: GatewayDriver) -> None:
    signed = await driver.signed_notification(adapter)
    unverifying = driver.build(**{str(driver.notification_secret): None})
    try:
        with pytest.raises(GatewayError):
            await unverifying.parse_webhook(signed.headers, signed.body)
    finally:
        await unverifying.aclose()


# -- customer authentication (3-D Secure) -----------------------------------------------------------

AUTHENTICATING = kinds(lambda driver: driver.challenge_token is not None)
RETURN_URL = "https://shop.example/checkout/done?order=7"


def _challenged(driver: GatewayDriver, *, capture: bool = True) -> PaymentRequest:
    assert driver.challenge_token is not None
    presence = CustomerPresence(return_url=RETURN_URL)
    return driver.request(driver.challenge_token, capture=capture, presence=presence)


@pytest.mark.parametrize("gateway_kind", AUTHENTICATING)
@pytest.mark.parametrize("capture", [True, False], ids=["charge", "authorize"])
async def test_a_challenge_waits_for_the_customer_then_completes_once(
    adapter: Gateway, driver: GatewayDriver, capture: bool
) -> None:
    request = _challenged(driver, capture=capture)

    waiting = await adapter.authorize(request)

    assert waiting.outcome is Outcome.ACTION_REQUIRED, waiting
    assert waiting.reference is not None
    assert waiting.next_action is not None
    assert waiting.next_action.redirect_url is not None
    assert waiting.next_action.return_url == RETURN_URL
    assert not [b for b in driver.booked(request.attempt_id) if b.holds_money]
    details = driver.authenticate(waiting.reference, succeed=True)
    done = await adapter.complete_authentication(request, waiting.reference, details)
    again = await adapter.complete_authentication(request, waiting.reference, details)

    assert done.outcome is again.outcome is Outcome.APPROVED, done
    assert done.captured is capture
    assert done.authentication is not None
    assert done.authentication.liability_shifted is True
    [booked] = driver.booked(request.attempt_id)
    assert booked.holds_money
    assert booked.amount_captured == (driver.amount if capture else 0)


@pytest.mark.parametrize("gateway_kind", AUTHENTICATING)
async def test_a_failed_challenge_declines_and_holds_nothing(adapter: Gateway, driver: GatewayDriver) -> None:
    request = _challenged(driver)
    waiting = await adapter.authorize(request)
    assert waiting.reference is not None

    details = driver.authenticate(waiting.reference, succeed=False)
    failed = await adapter.complete_authentication(request, waiting.reference, details)

    assert failed.outcome is Outcome.HARD_DECLINE, failed
    assert failed.authentication is not None
    assert failed.authentication.status == "failed"
    assert not [b for b in driver.booked(request.attempt_id) if b.holds_money]


@pytest.mark.parametrize("gateway_kind", AUTHENTICATING)
async def test_an_abandoned_challenge_is_asked_about_then_voided(adapter: Gateway, driver: GatewayDriver) -> None:
    request = _challenged(driver)
    waiting = await adapter.authorize(request)
    assert waiting.reference is not None

    standing = await adapter.complete_authentication(request, waiting.reference, {})
    voided = await adapter.void(waiting.reference, f"{request.attempt_id}_expiry")

    assert standing.outcome is Outcome.ACTION_REQUIRED, standing
    assert voided.outcome is Outcome.APPROVED, voided
    assert not [b for b in driver.booked(request.attempt_id) if b.holds_money]


@pytest.mark.parametrize("gateway_kind", AUTHENTICATING)
async def test_a_frictionless_authentication_approves_at_once(adapter: Gateway, driver: GatewayDriver) -> None:
    assert driver.frictionless_token is not None
    request = driver.request(driver.frictionless_token, presence=CustomerPresence(return_url=RETURN_URL))

    result = await adapter.authorize(request)

    assert result.outcome is Outcome.APPROVED, result
    assert result.authentication is not None
    assert result.authentication.status == "succeeded"
    assert result.network_transaction_id is not None
