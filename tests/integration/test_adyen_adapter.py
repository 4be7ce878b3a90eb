"""The Adyen adapter over real HTTP against the protocol-level Checkout fake."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from tests.fakes.adyen_server import AdyenFake, Fault, encrypted_card

from payorch.gateways.adyen import AdyenGateway
from payorch.gateways.base import Gateway, GatewayError, Outcome, PaymentRequest
from payorch.settings import GatewayConfig

HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


@pytest.fixture(scope="module")
def fake() -> Iterator[AdyenFake]:
    with AdyenFake() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_faults(fake: AdyenFake) -> Iterator[None]:
    fake.clear_faults()
    yield
    fake.clear_faults()
    fake.release()


def _config(url: str, *, api_key: str = "AQE_fake_key") -> GatewayConfig:
    return GatewayConfig(
        name="adyen",
        kind="adyen",
        base_url=url,
        api_key=SecretStr(api_key),
        merchant_account="PayorchECOM",
        timeout_ms=500,
    )


@pytest.fixture
async def gateway(fake: AdyenFake) -> AsyncIterator[AdyenGateway]:
    adapter = AdyenGateway(_config(fake.base_url), hmac_key=SecretStr(HMAC_KEY))
    yield adapter
    await adapter.aclose()


def _request(card: str | None = None, *, capture: bool = True, amount: int = 2500) -> PaymentRequest:
    return PaymentRequest(
        attempt_id=f"att_{uuid.uuid4().hex}",
        merchant_id="mer_1",
        charge_id=f"ch_{uuid.uuid4().hex}",
        amount=amount,
        currency="eur",
        token=card or encrypted_card(),
        capture=capture,
    )


def test_adapter_implements_the_protocol(gateway: AdyenGateway) -> None:
    assert isinstance(gateway, Gateway)


async def test_payment_is_authorised_with_reference_and_metadata(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()

    result = await gateway.authorize(request)

    assert result.outcome is Outcome.APPROVED
    assert result.captured
    assert result.card is not None
    assert (result.card.brand, result.card.last4, result.card.exp_year) == ("visa", "1111", 2030)
    [charge] = fake.charges_for(request.attempt_id)
    assert charge.reference == result.reference
    assert (charge.amount, charge.currency, charge.amount_captured) == (2500, "EUR", 2500)
    assert charge.idempotency_key == request.attempt_id
    assert charge.metadata["charge_id"] == request.charge_id


async def test_authorise_capture_refund(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request(capture=False)
    authorised = await gateway.authorize(request)
    assert authorised.reference is not None
    assert not authorised.captured

    captured = await gateway.capture(authorised.reference, 2000, "eur", f"cap_{request.attempt_id}")
    refunded = await gateway.refund(authorised.reference, 500, "eur", f"re_{request.attempt_id}")
    again = await gateway.refund(authorised.reference, 500, "eur", f"re_{request.attempt_id}")

    assert captured.outcome is refunded.outcome is Outcome.APPROVED
    assert again.reference == refunded.reference
    [charge] = fake.charges_for(request.attempt_id)
    assert (charge.status, charge.amount_captured, charge.refunds) == ("captured", 2000, [500])


async def test_void(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request(capture=False)
    authorised = await gateway.authorize(request)
    assert authorised.reference is not None

    voided = await gateway.void(authorised.reference, f"void_{request.attempt_id}")

    assert voided.outcome is Outcome.APPROVED
    assert fake.charges_for(request.attempt_id)[0].status == "cancelled"


async def test_capture_of_an_unknown_payment_is_not_sent(gateway: AdyenGateway) -> None:
    result = await gateway.capture("PSPNOPE", 100, "eur", "cap_nope")

    assert result.outcome is Outcome.NOT_SENT
    assert result.code == "167"


@pytest.mark.parametrize(
    ("holder", "outcome", "decline_code"),
    [
        ("DECLINED", Outcome.HARD_DECLINE, "card_declined"),
        ("NOT_ENOUGH_BALANCE", Outcome.HARD_DECLINE, "insufficient_funds"),
        ("BLOCK_CARD", Outcome.HARD_DECLINE, "pickup_card"),
        ("CARD_EXPIRED", Outcome.HARD_DECLINE, "expired_card"),
        ("INVALID_CARD", Outcome.HARD_DECLINE, "incorrect_number"),
        ("CVC_DECLINED", Outcome.HARD_DECLINE, "incorrect_cvc"),
        ("FRAUD", Outcome.HARD_DECLINE, "fraudulent"),
        ("ISSUER_UNAVAILABLE", Outcome.SOFT_DECLINE, "issuer_not_available"),
        ("ACQUIRER_ERROR", Outcome.SOFT_DECLINE, "processing_error"),
        ("ERROR", Outcome.SOFT_DECLINE, "processing_error"),
    ],
)
async def test_refusals(
    gateway: AdyenGateway, fake: AdyenFake, holder: str, outcome: Outcome, decline_code: str
) -> None:
    request = _request(encrypted_card(holder))

    result = await gateway.authorize(request)

    assert (result.outcome, result.decline_code) == (outcome, decline_code)
    [charge] = fake.charges_for(request.attempt_id)
    assert not charge.authorized
    assert charge.amount_captured == 0


async def test_received_is_unknown_until_the_webhook(gateway: AdyenGateway) -> None:
    result = await gateway.authorize(_request(encrypted_card("RECEIVED")))

    assert result.outcome is Outcome.UNKNOWN
    assert result.code == "Received"


async def test_raw_card_numbers_are_refused_before_sending(gateway: AdyenGateway, fake: AdyenFake) -> None:
    before = fake.request_count
    raw = json.dumps({"type": "scheme", "number": "4111111111111111", "cvc": "737"})

    result = await gateway.authorize(_request(raw))

    assert result.outcome is Outcome.NOT_SENT
    assert fake.request_count == before


async def test_same_attempt_twice_charges_once(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()

    first = await gateway.authorize(request)
    second = await gateway.authorize(request)

    assert first.reference == second.reference
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_wrong_api_key_is_not_sent(fake: AdyenFake) -> None:
    adapter = AdyenGateway(_config(fake.base_url, api_key="AQE_wrong"))
    request = _request()
    try:
        result = await adapter.authorize(request)
    finally:
        await adapter.aclose()

    assert result.outcome is Outcome.NOT_SENT
    assert fake.charges_for(request.attempt_id) == []


async def test_connection_refused_is_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = AdyenGateway(_config(f"http://127.0.0.1:{port}/v71"))
    try:
        result = await adapter.authorize(_request())
    finally:
        await adapter.aclose()

    assert result.outcome is Outcome.NOT_SENT


async def test_rate_limit_is_not_sent(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()
    fake.inject(Fault.RATE_LIMITED)

    assert (await gateway.authorize(request)).outcome is Outcome.NOT_SENT
    assert fake.charges_for(request.attempt_id) == []


@pytest.mark.parametrize(
    ("fault", "charged_before_lookup"),
    [
        # Adyen's 503 says nothing about what ran, so it is unknown; lookup then settles it.
        (Fault.ERROR_503_BEFORE_CHARGE, False),
        (Fault.RESET_BEFORE_CHARGE, False),
        (Fault.RESET_AFTER_CHARGE, True),
        (Fault.ERROR_500_AFTER_CHARGE, True),
        (Fault.GARBAGE_AFTER_CHARGE, True),
    ],
)
async def test_unknown_faults_resolve_by_lookup_to_the_ledger(
    gateway: AdyenGateway, fake: AdyenFake, fault: Fault, charged_before_lookup: bool
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


async def test_hang_then_lookup_charges_exactly_once(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()
    before = fake.request_count
    fake.inject(Fault.HANG)

    assert (await gateway.authorize(request)).outcome is Outcome.UNKNOWN
    # The fake took the request (and its fault) and then saw the client leave.
    await fake.until(lambda: fake.request_count > before)
    await fake.until_idle()
    assert fake.charges_for(request.attempt_id) == []
    assert (await gateway.lookup(request)).outcome is Outcome.APPROVED
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_late_success_stays_unknown_while_in_flight(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()
    fake.inject(Fault.LATE_SUCCESS)

    timed_out = await gateway.authorize(request)
    in_flight = await gateway.lookup(request)

    assert timed_out.outcome is in_flight.outcome is Outcome.UNKNOWN
    assert in_flight.code == "704"
    fake.release()
    await fake.until(lambda: bool(fake.charges_for(request.attempt_id)))
    await fake.until_idle()
    landed = await gateway.lookup(request)
    assert landed.outcome is Outcome.APPROVED
    assert landed.reference == fake.charges_for(request.attempt_id)[0].reference


async def test_a_refusal_lost_in_a_reset_is_found_by_lookup(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request(encrypted_card("NOT_ENOUGH_BALANCE"))
    fake.inject(Fault.RESET_AFTER_CHARGE)

    assert (await gateway.authorize(request)).outcome is Outcome.UNKNOWN
    resolved = await gateway.lookup(request)

    assert (resolved.outcome, resolved.decline_code) == (Outcome.HARD_DECLINE, "insufficient_funds")


async def test_lookup_never_reads_a_refused_replay_as_not_sent(gateway: AdyenGateway, fake: AdyenFake) -> None:
    request = _request()
    fake.inject(Fault.RESET_AFTER_CHARGE)
    assert (await gateway.authorize(request)).outcome is Outcome.UNKNOWN
    fake.inject(Fault.RATE_LIMITED)

    assert (await gateway.lookup(request)).outcome is Outcome.UNKNOWN
    assert len(fake.charges_for(request.attempt_id)) == 1


async def test_vault_stores_the_card_and_the_stored_token_charges(gateway: AdyenGateway, fake: AdyenFake) -> None:
    vaulted = await gateway.vault(encrypted_card(number_hint="5"), "pm_ours_1")
    assert vaulted.outcome is Outcome.APPROVED
    assert vaulted.token is not None
    assert vaulted.token.startswith("stored:pm_ours_1:")
    assert vaulted.card is not None
    assert vaulted.card.brand == "mc"

    request = _request(vaulted.token)
    charged = await gateway.authorize(request)

    assert charged.outcome is Outcome.APPROVED
    assert fake.charges_for(request.attempt_id)[0].amount_captured == 2500


async def test_vault_refuses_a_declined_card(gateway: AdyenGateway) -> None:
    vaulted = await gateway.vault(encrypted_card("DECLINED"), "pm_ours_2")

    assert vaulted.outcome is Outcome.HARD_DECLINE
    assert vaulted.token is None


# -- webhooks -------------------------------------------------------------------------------------


def _notification(key_hex: str = HMAC_KEY, *, value: int = 2500) -> bytes:
    item = {
        "pspReference": "PSP000001",
        "originalReference": "",
        "merchantAccountCode": "PayorchECOM",
        "merchantReference": "att_1",
        "amount": {"value": value, "currency": "EUR"},
        "eventCode": "AUTHORISATION",
        "success": "true",
        "eventDate": "2024-01-01T00:00:00+01:00",
    }
    # The signing string written out by hand, independently of the adapter's code.
    signing = f"PSP000001::PayorchECOM:att_1:{value}:EUR:AUTHORISATION:true"
    digest = hmac.new(bytes.fromhex(key_hex), signing.encode(), hashlib.sha256).digest()
    item["additionalData"] = {"hmacSignature": base64.b64encode(digest).decode()}
    return json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}).encode()


async def test_webhook_with_a_good_hmac_is_decoded(gateway: AdyenGateway) -> None:
    notification = await gateway.parse_webhook({}, _notification())

    assert (notification.kind, notification.attempt_id, notification.reference) == (
        "payment.authorized",
        "att_1",
        "PSP000001",
    )
    assert notification.amount == 2500


async def test_webhook_signed_with_another_key_is_refused(gateway: AdyenGateway) -> None:
    with pytest.raises(GatewayError):
        await gateway.parse_webhook({}, _notification("00" * 32))


async def test_webhook_with_a_tampered_amount_is_refused(gateway: AdyenGateway) -> None:
    body = _notification().replace(b'"value": 2500', b'"value": 9900')

    with pytest.raises(GatewayError):
        await gateway.parse_webhook({}, body)


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"notificationItems": [{"NotificationRequestItem": {}}]}'])
async def test_malformed_webhooks_are_refused(gateway: AdyenGateway, body: bytes) -> None:
    with pytest.raises(GatewayError):
        await gateway.parse_webhook({}, body)
