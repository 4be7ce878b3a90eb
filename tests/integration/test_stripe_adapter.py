"""The Stripe adapter driven through the real SDK against the protocol-level fake."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import stripe
from pydantic import SecretStr
from tests.fakes.stripe_server import Fault, StripeFake

from payorch.gateways.base import Gateway, GatewayError, Outcome, PaymentRequest
from payorch.gateways.stripe import StripeGateway
from payorch.settings import GatewayConfig

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_faults(fake: StripeFake) -> Iterator[None]:
    fake.clear_faults()
    yield
    fake.clear_faults()
    fake.release()


def _config(url: str, *, timeout_ms: int = 500, api_key: str = "sk_test_fake") -> GatewayConfig:
    return GatewayConfig(name="stripe", kind="stripe", base_url=url, api_key=SecretStr(api_key), timeout_ms=timeout_ms)


@pytest.fixture
async def gateway(fake: StripeFake) -> AsyncIterator[StripeGateway]:
    adapter = StripeGateway(_config(fake.url), webhook_secret=SecretStr(WEBHOOK_SECRET))
    yield adapter
    await adapter.aclose()


def _request(card: str = "tok_visa", *, amount: int = 1500, capture: bool = True) -> PaymentRequest:
    return PaymentRequest(
        attempt_id=f"att_{uuid.uuid4().hex}",
        merchant_id="mer_1",
        charge_id=f"ch_{uuid.uuid4().hex}",
        amount=amount,
        currency="USD",
        token=card,
        capture=capture,
    )


def test_adapter_implements_the_protocol(gateway: StripeGateway) -> None:
    assert isinstance(gateway, Gateway)


async def test_charge_approves_and_records_ids_in_metadata(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request()

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.APPROVED
    assert result.captured
    assert result.card is not None
    assert (result.card.brand, result.card.last4) == ("visa", "4242")
    [charge] = fake.charges_for(request.attempt_id)
    assert charge.reference == result.reference
    assert charge.amount_captured == 1500
    assert charge.currency == "usd"
    assert charge.idempotency_key == request.attempt_id
    assert charge.metadata == {
        "merchant_id": "mer_1",
        "charge_id": request.charge_id,
        "attempt_id": request.attempt_id,
    }


async def test_authorize_capture_and_refund(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request(capture=False)
    authorized = await gateway.authorize(request)
    assert authorized.outcome is Outcome.APPROVED
    assert not authorized.captured
    assert authorized.reference is not None

    captured = await gateway.capture(authorized.reference, 1200, "usd", f"cap_{request.attempt_id}")
    first = await gateway.refund(authorized.reference, 200, "usd", f"re1_{request.attempt_id}")
    second = await gateway.refund(authorized.reference, 300, "usd", f"re2_{request.attempt_id}")
    replayed = await gateway.refund(authorized.reference, 300, "usd", f"re2_{request.attempt_id}")

    assert captured.outcome is Outcome.APPROVED
    assert captured.captured
    assert first.outcome is second.outcome is Outcome.APPROVED
    assert first.reference is not None
    assert first.reference.startswith("re_")
    assert replayed.reference == second.reference
    [charge] = fake.charges_for(request.attempt_id)
    assert (charge.amount_captured, charge.amount_refunded, charge.refunds) == (1200, 500, [200, 300])


async def test_void_releases_the_authorization(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request(capture=False)
    authorized = await gateway.authorize(request)
    assert authorized.reference is not None

    voided = await gateway.void(authorized.reference, f"void_{request.attempt_id}")

    assert voided.outcome is Outcome.APPROVED
    [charge] = fake.charges_for(request.attempt_id)
    assert charge.status == "canceled"
    assert charge.amount_captured == 0


async def test_refund_beyond_the_captured_amount_is_refused_without_effect(
    gateway: StripeGateway, fake: StripeFake
) -> None:
    request = _request()
    charged = await gateway.authorize(request)
    assert charged.reference is not None

    refused = await gateway.refund(charged.reference, 5000, "usd", f"re_{request.attempt_id}")

    assert refused.outcome is Outcome.NOT_SENT
    assert refused.code == "amount_too_large"
    assert fake.charges_for(request.attempt_id)[0].amount_refunded == 0


@pytest.mark.parametrize(
    ("token", "outcome", "decline_code"),
    [
        ("tok_chargeDeclined", Outcome.HARD_DECLINE, "card_declined"),
        ("tok_chargeDeclinedInsufficientFunds", Outcome.HARD_DECLINE, "insufficient_funds"),
        ("tok_chargeDeclinedLostCard", Outcome.HARD_DECLINE, "lost_card"),
        ("tok_chargeDeclinedStolenCard", Outcome.HARD_DECLINE, "stolen_card"),
        ("tok_chargeDeclinedFraudulent", Outcome.HARD_DECLINE, "fraudulent"),
        ("tok_chargeDeclinedExpiredCard", Outcome.HARD_DECLINE, "expired_card"),
        ("tok_chargeDeclinedIncorrectCvc", Outcome.HARD_DECLINE, "incorrect_cvc"),
        ("tok_chargeDeclinedProcessingError", Outcome.SOFT_DECLINE, "processing_error"),
        ("tok_chargeDeclinedTryAgainLater", Outcome.SOFT_DECLINE, "try_again_later"),
    ],
)
async def test_declines(
    gateway: StripeGateway, fake: StripeFake, token: str, outcome: Outcome, decline_code: str
) -> None:
    request = _request(token)

    result = await gateway.authorize(request)

    assert result.outcome is outcome
    assert result.decline_code == decline_code
    [charge] = fake.charges_for(request.attempt_id)
    assert charge.reference == result.reference
    assert not charge.authorized
    assert charge.amount_captured == 0


async def test_unknown_token_is_not_sent(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request("pm_does_not_exist")

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.NOT_SENT
    assert result.code == "resource_missing"
    assert fake.charges_for(request.attempt_id) == []


async def test_same_attempt_twice_charges_once(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request()

    first = await gateway.authorize(request)
    second = await gateway.authorize(request)

    assert first.outcome is second.outcome is Outcome.APPROVED
    assert first.reference == second.reference
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_key_reused_with_other_parameters_is_unknown_and_charges_nothing_more(
    gateway: StripeGateway, fake: StripeFake
) -> None:
    request = _request()
    await gateway.authorize(request)
    altered = PaymentRequest(**{**_fields(request), "amount": 9999})

    result = await gateway.authorize(altered)

    assert result.outcome is Outcome.UNKNOWN
    [charge] = fake.charges_for(request.attempt_id)
    assert charge.amount == 1500


def _fields(request: PaymentRequest) -> dict[str, object]:
    return {name: getattr(request, name) for name in PaymentRequest.__slots__}


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.RATE_LIMITED, Fault.ERROR_503_BEFORE_CHARGE])
async def test_refusals_that_state_nothing_ran_are_not_sent(
    gateway: StripeGateway, fake: StripeFake, fault: Fault
) -> None:
    request = _request()
    fake.inject(fault)

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.NOT_SENT
    assert fake.charges_for(request.attempt_id) == []


async def test_connection_refused_is_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = StripeGateway(_config(f"http://127.0.0.1:{port}"))
    try:
        result = await adapter.authorize(_request())
    finally:
        await adapter.aclose()

    assert result.outcome is Outcome.NOT_SENT
    assert result.code == "ConnectError"


async def test_wrong_api_key_is_not_sent(fake: StripeFake) -> None:
    adapter = StripeGateway(_config(fake.url, api_key="sk_test_wrong"))
    request = _request()
    try:
        result = await adapter.authorize(request)
    finally:
        await adapter.aclose()

    assert result.outcome is Outcome.NOT_SENT
    assert fake.charges_for(request.attempt_id) == []


@pytest.mark.parametrize(
    ("fault", "charged_before_lookup"),
    [
        (Fault.RESET_BEFORE_CHARGE, False),
        (Fault.RESET_AFTER_CHARGE, True),
        (Fault.ERROR_500_AFTER_CHARGE, True),
        (Fault.GARBAGE_AFTER_CHARGE, True),
    ],
)
async def test_unknown_faults_resolve_by_lookup_to_the_ledger(
    gateway: StripeGateway, fake: StripeFake, fault: Fault, charged_before_lookup: bool
) -> None:
    request = _request()
    fake.inject(fault)

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.UNKNOWN
    assert bool(fake.charges_for(request.attempt_id)) is charged_before_lookup
    resolved = await gateway.lookup(request)
    [charge] = fake.charges_for(request.attempt_id)
    assert resolved.outcome is Outcome.APPROVED
    assert resolved.reference == charge.reference
    assert charge.amount_captured == request.amount


async def test_hang_is_unknown_then_lookup_charges_exactly_once(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request()
    before = fake.request_count
    fake.inject(Fault.HANG)

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.UNKNOWN
    assert result.code == "ReadTimeout"
    # The fake took the request (and its fault) and then saw the client leave.
    await fake.until(lambda: fake.request_count > before)
    await fake.until_idle()
    assert fake.charges_for(request.attempt_id) == []
    resolved = await gateway.lookup(request)
    assert resolved.outcome is Outcome.APPROVED
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_late_success_is_in_flight_until_it_lands(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request()
    fake.inject(Fault.LATE_SUCCESS)

    timed_out = await gateway.authorize(request)
    in_flight = await gateway.lookup(request)

    assert timed_out.outcome is Outcome.UNKNOWN
    assert in_flight.outcome is Outcome.UNKNOWN
    assert in_flight.code == "idempotency_key_in_use"
    fake.release()
    await fake.until(lambda: bool(fake.charges_for(request.attempt_id)))
    await fake.until_idle()
    landed = await gateway.lookup(request)
    [charge] = fake.charges_for(request.attempt_id)
    assert landed.outcome is Outcome.APPROVED
    assert landed.reference == charge.reference


async def test_a_decline_lost_in_a_reset_is_found_by_lookup(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request("tok_chargeDeclinedInsufficientFunds")
    fake.inject(Fault.RESET_AFTER_CHARGE)

    assert (await gateway.authorize(request)).outcome is Outcome.UNKNOWN
    resolved = await gateway.lookup(request)

    assert resolved.outcome is Outcome.HARD_DECLINE
    assert resolved.decline_code == "insufficient_funds"


async def test_lookup_never_reads_a_refused_replay_as_not_sent(gateway: StripeGateway, fake: StripeFake) -> None:
    request = _request()
    fake.inject(Fault.RESET_AFTER_CHARGE)
    assert (await gateway.authorize(request)).outcome is Outcome.UNKNOWN
    fake.inject(Fault.RATE_LIMITED)

    # The replay was rate limited, which says nothing about the original (which charged).
    blocked = await gateway.lookup(request)

    assert blocked.outcome is Outcome.UNKNOWN
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_lookup_of_an_attempt_refused_before_running_is_not_sent(gateway: StripeGateway) -> None:
    result = await gateway.lookup(_request("pm_does_not_exist"))

    assert result.outcome is Outcome.NOT_SENT


async def test_fault_per_token_leaves_other_cards_alone(gateway: StripeGateway, fake: StripeFake) -> None:
    fake.inject(Fault.ERROR_503_BEFORE_CHARGE, token="tok_mastercard")

    broken = await gateway.authorize(_request("tok_mastercard"))
    working = await gateway.authorize(_request("tok_visa"))

    assert broken.outcome is Outcome.NOT_SENT
    assert working.outcome is Outcome.APPROVED


# -- vault ----------------------------------------------------------------------------------------


async def test_vault_turns_a_token_into_a_reusable_payment_method(gateway: StripeGateway, fake: StripeFake) -> None:
    vaulted = await gateway.vault("tok_mastercard", "pm_ours_1")
    assert vaulted.outcome is Outcome.APPROVED
    assert vaulted.token is not None
    assert vaulted.token.startswith("pm_")
    assert vaulted.card is not None
    assert (vaulted.card.brand, vaulted.card.last4, vaulted.card.exp_month) == ("mastercard", "4444", 12)

    checked = await gateway.vault(vaulted.token, "pm_ours_2")
    charged = await gateway.authorize(_request(vaulted.token))

    assert checked.token == vaulted.token
    assert charged.outcome is Outcome.APPROVED
    assert charged.card == vaulted.card


async def test_vault_refuses_what_is_not_a_stripe_token(gateway: StripeGateway) -> None:
    assert (await gateway.vault("nonce-from-braintree", "pm_ours_3")).outcome is Outcome.NOT_SENT
    assert (await gateway.vault("tok_nonexistent", "pm_ours_4")).outcome is Outcome.NOT_SENT


# -- webhooks -------------------------------------------------------------------------------------


def _event(timestamp: int | None = None, secret: str = WEBHOOK_SECRET) -> tuple[dict[str, str], bytes]:
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {
                "object": {
                    "id": "pi_1",
                    "object": "payment_intent",
                    "amount_received": 1500,
                    "metadata": {"attempt_id": "att_1"},
                }
            },
        }
    )
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return {"Stripe-Signature": header}, payload.encode()


async def test_webhook_with_a_good_signature_is_decoded(gateway: StripeGateway) -> None:
    headers, body = _event()

    notification = await gateway.parse_webhook(headers, body)

    assert (notification.event_id, notification.kind) == ("evt_1", "payment.succeeded")
    assert (notification.attempt_id, notification.reference, notification.amount) == ("att_1", "pi_1", 1500)


async def test_webhook_with_a_bad_signature_is_refused(gateway: StripeGateway) -> None:
    headers, body = _event(secret="whsec_someone_else")

    with pytest.raises(GatewayError):
        await gateway.parse_webhook(headers, body)


async def test_webhook_with_a_tampered_body_is_refused(gateway: StripeGateway) -> None:
    headers, body = _event()

    with pytest.raises(GatewayError):
        await gateway.parse_webhook(headers, body.replace(b"1500", b"9500"))


async def test_stale_webhook_is_refused(gateway: StripeGateway) -> None:
    headers, body = _event(timestamp=int(time.time()) - 3600)

    with pytest.raises(GatewayError):
        await gateway.parse_webhook(headers, body)


async def test_webhook_without_signature_or_secret_is_refused(fake: StripeFake, gateway: StripeGateway) -> None:
    headers, body = _event()
    no_secret = StripeGateway(_config(fake.url))
    try:
        with pytest.raises(GatewayError):
            await no_secret.parse_webhook(headers, body)
    finally:
        await no_secret.aclose()
    with pytest.raises(GatewayError):
        await gateway.parse_webhook({}, body)
