"""The Braintree adapter, driving the real SDK against the protocol-level fake (tests/fakes)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import pytest
from pydantic import SecretStr
from tests.fakes.braintree_server import BraintreeFake, Fault

from payorch.gateways.base import CardSummary, Gateway, GatewayError, Outcome, PaymentRequest
from payorch.gateways.braintree import BraintreeAdapter
from payorch.settings import GatewayConfig

# Faults that hold the request last exactly one client timeout: keep it short.
TIMEOUT_MS = 500


@pytest.fixture(scope="module")
def fake() -> Iterator[BraintreeFake]:
    with BraintreeFake() as server:
        yield server


@pytest.fixture(autouse=True)
def _no_leftover_faults(fake: BraintreeFake) -> Iterator[None]:
    yield
    fake.clear_faults()


def config_for(url: str, fake: BraintreeFake, **overrides: object) -> GatewayConfig:
    fields: dict[str, object] = {
        "name": "braintree",
        "kind": "braintree",
        "timeout_ms": TIMEOUT_MS,
        "base_url": url,
        "merchant_account": fake.merchant_id,
        "public_key": fake.public_key,
        "private_key": SecretStr(fake.private_key),
    }
    fields.update(overrides)
    return GatewayConfig.model_validate(fields)


@pytest.fixture
async def adapter(fake: BraintreeFake) -> AsyncIterator[BraintreeAdapter]:
    gateway = BraintreeAdapter(config_for(fake.url, fake))
    yield gateway
    await gateway.aclose()


VALID_NONCE = "fake-valid-nonce"


def payment(
    amount: int = 1000, token: str = VALID_NONCE, *, capture: bool = True, currency: str = "usd"
) -> PaymentRequest:
    return PaymentRequest(
        attempt_id=f"att_{uuid.uuid4().hex[:16]}",
        merchant_id="mer_1",
        charge_id="ch_1",
        amount=amount,
        currency=currency,
        token=token,
        capture=capture,
    )


def holds_money(fake: BraintreeFake, request: PaymentRequest) -> bool:
    return any(t.holds_money for t in fake.transactions_for(request.attempt_id))


def test_adapter_implements_the_gateway_protocol(adapter: BraintreeAdapter) -> None:
    assert isinstance(adapter, Gateway)
    assert adapter.name == "braintree"


# --- the happy paths ---------------------------------------------------------------------------------


async def test_sale_is_charged_and_captured(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    request = payment(1050)
    result = await adapter.authorize(request)
    assert (result.outcome, result.captured) == (Outcome.APPROVED, True)
    assert result.card == CardSummary(brand="visa", last4="1111", exp_month=12, exp_year=2030)
    [charged] = fake.transactions_for(request.attempt_id)
    assert (charged.id, charged.amount, charged.status) == (
        result.reference,
        Decimal("10.50"),
        "submitted_for_settlement",
    )


async def test_zero_decimal_currency_is_sent_in_major_units(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    request = payment(500, currency="jpy")
    assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
    assert fake.transactions_for(request.attempt_id)[0].amount == Decimal(500)


async def test_authorize_then_partial_capture(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    request = payment(1000, capture=False)
    authorized = await adapter.authorize(request)
    assert (authorized.outcome, authorized.captured) == (Outcome.APPROVED, False)
    assert fake.transaction(str(authorized.reference)).status == "authorized"

    captured = await adapter.capture(str(authorized.reference), 600, "usd", "cap_1")
    assert (captured.outcome, captured.captured) == (Outcome.APPROVED, True)
    ledger = fake.transaction(str(authorized.reference))
    assert (ledger.status, ledger.amount) == ("submitted_for_settlement", Decimal("6.00"))


async def test_replayed_capture_is_confirmed_not_refused(adapter: BraintreeAdapter) -> None:
    authorized = await adapter.authorize(payment(capture=False))
    reference = str(authorized.reference)
    assert (await adapter.capture(reference, 1000, "usd", "cap_2")).outcome is Outcome.APPROVED
    assert (await adapter.capture(reference, 1000, "usd", "cap_2")).outcome is Outcome.APPROVED


async def test_capture_above_the_authorization_is_refused(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    authorized = await adapter.authorize(payment(1000, capture=False))
    result = await adapter.capture(str(authorized.reference), 1001, "usd", "cap_3")
    assert (result.outcome, result.code) == (Outcome.HARD_DECLINE, "91522")
    assert fake.transaction(str(authorized.reference)).status == "authorized"


async def test_void_releases_the_authorization_once(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    authorized = await adapter.authorize(payment(capture=False))
    reference = str(authorized.reference)
    assert (await adapter.void(reference, "void_1")).outcome is Outcome.APPROVED
    assert fake.transaction(reference).status == "voided"
    assert (await adapter.void(reference, "void_1")).outcome is Outcome.APPROVED  # a replay


async def test_void_of_a_settled_sale_is_refused(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    sale = await adapter.authorize(payment())
    fake.settle(str(sale.reference))
    result = await adapter.void(str(sale.reference), "void_2")
    assert (result.outcome, result.code) == (Outcome.HARD_DECLINE, "91504")


async def test_partial_refund_of_a_settled_sale(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    sale = await adapter.authorize(payment(1000))
    fake.settle(str(sale.reference))
    result = await adapter.refund(str(sale.reference), 400, "usd", "re_key_1")
    assert result.outcome is Outcome.APPROVED
    refund = fake.transaction(str(result.reference))
    assert (refund.type, refund.amount, refund.order_id) == ("credit", Decimal("4.00"), "re_key_1")
    assert refund.refunded_transaction_id == sale.reference

    too_much = await adapter.refund(str(sale.reference), 601, "usd", "re_key_2")
    assert (too_much.outcome, too_much.code) == (Outcome.HARD_DECLINE, "91521")


async def test_refund_of_an_unsettled_sale_is_refused(adapter: BraintreeAdapter) -> None:
    sale = await adapter.authorize(payment())
    result = await adapter.refund(str(sale.reference), 1000, "usd", "re_key_3")
    assert (result.outcome, result.code) == (Outcome.HARD_DECLINE, "91506")


async def test_capture_of_an_unknown_transaction_is_not_sent(adapter: BraintreeAdapter) -> None:
    assert (await adapter.capture("nosuchtxn", 100, "usd", "cap_4")).outcome is Outcome.NOT_SENT


# --- declines ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "token", "outcome", "code", "decline_code"),
    [
        (200100, "fake-valid-nonce", Outcome.HARD_DECLINE, "2001", "insufficient_funds"),
        (200000, "fake-valid-nonce", Outcome.SOFT_DECLINE, "2000", "do_not_honor"),
        (203800, "fake-valid-nonce", Outcome.SOFT_DECLINE, "2038", "generic_decline"),
        (204600, "fake-valid-nonce", Outcome.SOFT_DECLINE, "2046", "generic_decline"),
        (200400, "fake-valid-nonce", Outcome.HARD_DECLINE, "2004", "expired_card"),
        (300000, "fake-valid-nonce", Outcome.SOFT_DECLINE, "3000", "try_again_later"),
        (1000, "fake-processor-declined-visa-nonce", Outcome.SOFT_DECLINE, "2000", "do_not_honor"),
        (1000, "fake-processor-failure-visa-nonce", Outcome.SOFT_DECLINE, "3000", "try_again_later"),
        (1000, "fake-gateway-rejected-fraud-nonce", Outcome.HARD_DECLINE, "fraud", "fraudulent"),
        (1000, "fake-gateway-rejected-cvv-nonce", Outcome.HARD_DECLINE, "cvv", "incorrect_cvc"),
        (1000, "fake-gateway-rejected-avs-nonce", Outcome.HARD_DECLINE, "avs", "incorrect_zip"),
        (
            1000,
            "fake-gateway-rejected-duplicate-nonce",
            Outcome.HARD_DECLINE,
            "duplicate",
            "duplicate_transaction",
        ),
        (
            1000,
            "fake-gateway-rejected-risk-threshold-nonce",
            Outcome.HARD_DECLINE,
            "risk_threshold",
            "fraudulent",
        ),
        (1000, "fake-consumed-nonce", Outcome.HARD_DECLINE, "91564", "invalid_payment_method"),
        (1000, "not-a-nonce-at-all", Outcome.HARD_DECLINE, "91565", "invalid_payment_method"),
    ],
)
async def test_declines(
    adapter: BraintreeAdapter,
    fake: BraintreeFake,
    amount: int,
    token: str,
    outcome: Outcome,
    code: str,
    decline_code: str,
) -> None:
    request = payment(amount, token)
    result = await adapter.authorize(request)
    assert (result.outcome, result.code, result.decline_code) == (outcome, code, decline_code)
    assert not holds_money(fake, request)


# --- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome", "charged"),
    [
        (Fault.HANG, Outcome.UNKNOWN, False),
        (Fault.RESET_BEFORE_CHARGE, Outcome.UNKNOWN, False),
        (Fault.RESET_AFTER_CHARGE, Outcome.UNKNOWN, True),
        (Fault.ERROR_500_AFTER_CHARGE, Outcome.UNKNOWN, True),
        (Fault.GARBAGE_AFTER_CHARGE, Outcome.UNKNOWN, True),
        (Fault.MISSING_FIELDS_AFTER_CHARGE, Outcome.UNKNOWN, True),
        (Fault.LATE_SUCCESS, Outcome.UNKNOWN, True),
        (Fault.ERROR_503_BEFORE_CHARGE, Outcome.NOT_SENT, False),
        (Fault.RATE_LIMITED, Outcome.NOT_SENT, False),
    ],
)
async def test_faults_give_the_right_outcome_and_lookup_finds_the_truth(
    adapter: BraintreeAdapter, fake: BraintreeFake, fault: Fault, outcome: Outcome, charged: bool
) -> None:
    request = payment()
    fake.inject(fault, operation="sale")
    assert (await adapter.authorize(request)).outcome is outcome

    # The fake settles its side (a late success lands once the client gave up) before we ask.
    await fake.until(lambda: holds_money(fake, request) is charged)
    await fake.until_idle()
    found = await adapter.lookup(request)
    transactions = fake.transactions_for(request.attempt_id)
    assert len(transactions) == (1 if charged else 0)  # never charged twice, not even by a retry
    if charged:
        assert (found.outcome, found.reference) == (Outcome.APPROVED, transactions[0].id)
        assert found.captured is True
    else:
        assert found.outcome is Outcome.NOT_SENT


async def test_connection_refused_is_not_sent_and_lookup_is_unknown(fake: BraintreeFake) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = BraintreeAdapter(config_for(f"http://127.0.0.1:{port}", fake))
    try:
        request = payment()
        result = await gateway.authorize(request)
        assert (result.outcome, result.code) == (Outcome.NOT_SENT, "connect_failed")
        # A search that cannot run says nothing about the attempt.
        assert (await gateway.lookup(request)).outcome is Outcome.UNKNOWN
    finally:
        await gateway.aclose()


@pytest.mark.parametrize(
    ("operation", "fault"),
    [
        ("search_ids", Fault.ERROR_500_AFTER_CHARGE),
        ("search_ids", Fault.ERROR_503_BEFORE_CHARGE),
        ("search", Fault.GARBAGE_AFTER_CHARGE),
        ("search_ids", Fault.HANG),
    ],
)
async def test_failing_search_makes_lookup_unknown(
    adapter: BraintreeAdapter, fake: BraintreeFake, operation: str, fault: Fault
) -> None:
    request = payment()
    assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
    fake.inject(fault, operation=operation)
    assert (await adapter.lookup(request)).outcome is Outcome.UNKNOWN
    assert (await adapter.lookup(request)).outcome is Outcome.APPROVED  # once the fault has passed


async def test_lookup_of_a_declined_attempt_reports_the_decline(adapter: BraintreeAdapter) -> None:
    request = payment(200100)
    await adapter.authorize(request)
    found = await adapter.lookup(request)
    assert (found.outcome, found.decline_code) == (Outcome.HARD_DECLINE, "insufficient_funds")


async def test_fault_per_nonce_only_hits_that_nonce(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    fake.inject(Fault.ERROR_500_AFTER_CHARGE, nonce="fake-valid-mastercard-nonce")
    assert (await adapter.authorize(payment(token="fake-valid-nonce"))).outcome is Outcome.APPROVED
    assert (await adapter.authorize(payment(token="fake-valid-mastercard-nonce"))).outcome is Outcome.UNKNOWN


async def test_capture_and_refund_faults_are_unknown_or_not_sent(
    adapter: BraintreeAdapter, fake: BraintreeFake
) -> None:
    authorized = await adapter.authorize(payment(capture=False))
    reference = str(authorized.reference)
    fake.inject(Fault.ERROR_503_BEFORE_CHARGE, operation="submit_for_settlement")
    assert (await adapter.capture(reference, 1000, "usd", "cap_5")).outcome is Outcome.NOT_SENT
    fake.inject(Fault.RESET_AFTER_CHARGE, operation="submit_for_settlement")
    assert (await adapter.capture(reference, 1000, "usd", "cap_5")).outcome is Outcome.UNKNOWN
    await fake.until_idle()
    assert fake.transaction(reference).status == "submitted_for_settlement"
    fake.settle(reference)
    fake.inject(Fault.ERROR_500_AFTER_CHARGE, operation="refund")
    assert (await adapter.refund(reference, 1000, "usd", "re_key_4")).outcome is Outcome.UNKNOWN
    [refund] = [t for t in fake.ledger if t.order_id == "re_key_4"]
    assert refund.refunded_transaction_id == reference


async def test_wrong_credentials_are_not_sent(fake: BraintreeFake) -> None:
    gateway = BraintreeAdapter(config_for(fake.url, fake, private_key=SecretStr("wrong")))
    try:
        request = payment()
        result = await gateway.authorize(request)
        assert (result.outcome, result.code) == (Outcome.NOT_SENT, "authentication_error")
        assert fake.transactions_for(request.attempt_id) == []
    finally:
        await gateway.aclose()


# --- vault -------------------------------------------------------------------------------------------


async def test_vaulted_card_can_be_charged_again(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    vaulted = await adapter.vault("fake-valid-mastercard-nonce", f"vault_{uuid.uuid4().hex}")
    assert vaulted.outcome is Outcome.APPROVED
    assert vaulted.token is not None
    assert vaulted.card == CardSummary(brand="mastercard", last4="4444", exp_month=12, exp_year=2030)

    for _ in range(2):
        request = payment(token=vaulted.token)
        assert (await adapter.authorize(request)).outcome is Outcome.APPROVED
        [sale] = fake.transactions_for(request.attempt_id)
        assert (sale.payment_method_token, sale.card.last_4) == (vaulted.token, "4444")


async def test_replayed_vault_returns_the_same_token(adapter: BraintreeAdapter) -> None:
    key = f"vault_{uuid.uuid4().hex}"
    first = await adapter.vault("fake-valid-nonce", key)
    again = await adapter.vault("fake-valid-nonce", key)
    assert first.outcome is again.outcome is Outcome.APPROVED
    assert first.token == again.token


async def test_vault_replayed_after_the_nonce_was_spent_returns_the_stored_card(
    adapter: BraintreeAdapter,
) -> None:
    key = f"vault_{uuid.uuid4().hex}"
    first = await adapter.vault("fake-valid-amex-nonce", key)
    # A real nonce is single use: the replay of a lost answer finds it spent.
    again = await adapter.vault("fake-consumed-nonce", key)
    assert (again.outcome, again.token, again.card) == (Outcome.APPROVED, first.token, first.card)


async def test_spent_nonce_without_an_earlier_vault_is_refused(adapter: BraintreeAdapter) -> None:
    result = await adapter.vault("fake-consumed-nonce", f"vault_{uuid.uuid4().hex}")
    assert (result.outcome, result.code, result.token) == (Outcome.HARD_DECLINE, "93107", None)


@pytest.mark.parametrize(
    ("nonce", "outcome", "code"),
    [
        ("fake-processor-declined-visa-nonce", Outcome.SOFT_DECLINE, "2000"),
        ("fake-gateway-rejected-fraud-nonce", Outcome.HARD_DECLINE, "fraud"),
        ("not-a-nonce", Outcome.HARD_DECLINE, "93108"),
    ],
)
async def test_vault_refusals(adapter: BraintreeAdapter, nonce: str, outcome: Outcome, code: str) -> None:
    result = await adapter.vault(nonce, f"vault_{uuid.uuid4().hex}")
    assert (result.outcome, result.code, result.token) == (outcome, code, None)


async def test_vault_when_braintree_is_unavailable(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    fake.inject(Fault.ERROR_503_BEFORE_CHARGE, operation="customer_create")
    assert (await adapter.vault("fake-valid-nonce", f"vault_{uuid.uuid4().hex}")).outcome is Outcome.NOT_SENT


# --- webhooks ----------------------------------------------------------------------------------------


async def test_signed_webhook_is_parsed(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    request = payment(2599)
    sale = await adapter.authorize(request)
    body = fake.webhook("transaction_settled", str(sale.reference))
    event = await adapter.parse_webhook({"content-type": "application/x-www-form-urlencoded"}, body)
    assert (event.kind, event.attempt_id, event.reference, event.amount) == (
        "payment.succeeded",
        request.attempt_id,
        sale.reference,
        2599,
    )
    assert event.event_id == (await adapter.parse_webhook({}, body)).event_id  # stable for deduplication


async def test_webhook_signed_with_another_key_is_refused(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    sale = await adapter.authorize(payment())
    body = fake.webhook("transaction_settled", str(sale.reference), private_key="not_ours")
    with pytest.raises(GatewayError, match="unverifiable"):
        await adapter.parse_webhook({}, body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"bt_signature=x",
        b"\xff\xfe",
        b"bt_signature=fake_public_key%7Cabc&bt_payload=PG5vdGlmaWNhdGlvbi8%2B",
    ],
)
async def test_malformed_webhooks_are_refused(adapter: BraintreeAdapter, body: bytes) -> None:
    with pytest.raises(GatewayError):
        await adapter.parse_webhook({}, body)


async def test_tampered_webhook_payload_is_refused(adapter: BraintreeAdapter, fake: BraintreeFake) -> None:
    sale = await adapter.authorize(payment())
    body = fake.webhook("transaction_settled", str(sale.reference))
    tampered = body.replace(b"bt_payload=P", b"bt_payload=Q", 1)
    assert tampered != body
    with pytest.raises(GatewayError):
        await adapter.parse_webhook({}, tampered)


# --- configuration -----------------------------------------------------------------------------------


def test_missing_credentials_are_refused_at_construction(fake: BraintreeFake) -> None:
    with pytest.raises(ValueError, match="public_key"):
        BraintreeAdapter(config_for(fake.url, fake, public_key=None))


def test_https_base_url_off_port_443_is_refused(fake: BraintreeFake) -> None:
    with pytest.raises(ValueError, match="443"):
        BraintreeAdapter(config_for("https://127.0.0.1:8443", fake))
