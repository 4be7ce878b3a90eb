"""Braintree wire objects -> payorch results, without a network: SDK objects built from dicts."""

from __future__ import annotations

import warnings
from typing import Any
from xml.parsers.expat import ExpatError

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError, ReadTimeoutError

from payorch.gateways.base import CardSummary, Outcome
from payorch.gateways.braintree import declines, mapping
from payorch.money import from_major_string, to_major_string

with warnings.catch_warnings():
    # The SDK warns from its own class bodies at import; see payorch.gateways.braintree.adapter.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"braintree\.")
    import braintree
    from braintree.exceptions import (
        AuthenticationError,
        GatewayTimeoutError,
        ServerError,
        ServiceUnavailableError,
        TooManyRequestsError,
    )

VISA = {"card_type": "Visa", "last_4": "1111", "expiration_month": "12", "expiration_year": "2030"}


def transaction(**fields: Any) -> Any:
    attributes = {
        "id": "txn1",
        "status": "authorized",
        "type": "sale",
        "amount": "10.00",
        "currency_iso_code": "USD",
        "order_id": "att_1",
        "processor_response_code": "1000",
        "processor_response_text": "Approved",
        "gateway_rejection_reason": None,
        "credit_card": dict(VISA),
    }
    attributes.update(fields)
    return braintree.Transaction(None, attributes)


def error_result(code: str | None = None, **extra: Any) -> Any:
    errors: dict[str, Any] = {"errors": []}
    if code is not None:
        errors["transaction"] = {"errors": [{"code": code, "attribute": "base", "message": f"error {code}"}]}
    return braintree.ErrorResult(None, {"errors": errors, "message": "refused", **extra})


# --- money (Braintree's wire amounts are decimal strings in major units, converted by payorch.money) ---


@pytest.mark.parametrize(
    ("amount", "currency", "wire"),
    [
        (1050, "usd", "10.50"),
        (5, "USD", "0.05"),
        (100, "eur", "1.00"),
        (500, "jpy", "500"),
        (1234, "kwd", "1.234"),
        (1000, "bhd", "1.000"),
        (0, "usd", "0.00"),
        (123456789012, "usd", "1234567890.12"),
    ],
)
def test_minor_units_convert_exactly_both_ways(amount: int, currency: str, wire: str) -> None:
    assert to_major_string(amount, currency) == wire
    assert from_major_string(wire, currency) == amount


def test_amounts_finer_than_the_currency_are_refused() -> None:
    with pytest.raises(ValueError, match="precision"):
        from_major_string("10.505", "usd")
    with pytest.raises(ValueError, match="precision"):
        from_major_string("1.5", "jpy")


def test_conversion_never_goes_through_float() -> None:
    # 0.1 + 0.2 style drift would show here across a range of cents.
    assert all(from_major_string(to_major_string(cents, "usd"), "usd") == cents for cents in range(0, 100_001, 7))


# --- declines ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "outcome", "decline_code"),
    [
        ("1000", Outcome.APPROVED, None),
        ("1004", Outcome.APPROVED, None),
        ("2000", Outcome.SOFT_DECLINE, "do_not_honor"),
        ("2001", Outcome.HARD_DECLINE, "insufficient_funds"),
        ("2004", Outcome.HARD_DECLINE, "expired_card"),
        ("2010", Outcome.HARD_DECLINE, "incorrect_cvc"),
        ("2013", Outcome.HARD_DECLINE, "stolen_card"),
        ("2014", Outcome.HARD_DECLINE, "fraudulent"),
        ("2016", Outcome.HARD_DECLINE, "duplicate_transaction"),
        ("2038", Outcome.SOFT_DECLINE, "generic_decline"),
        ("2046", Outcome.SOFT_DECLINE, "generic_decline"),
        ("3000", Outcome.SOFT_DECLINE, "try_again_later"),
        ("2999", Outcome.HARD_DECLINE, "card_declined"),
        ("", Outcome.HARD_DECLINE, "card_declined"),
        (None, Outcome.HARD_DECLINE, "card_declined"),
    ],
)
def test_processor_codes_classify_as_documented(code: str | None, outcome: Outcome, decline_code: str | None) -> None:
    assert declines.classify_processor_code(code) == (outcome, decline_code)


@pytest.mark.parametrize(
    ("reason", "outcome", "decline_code"),
    [
        ("cvv", Outcome.HARD_DECLINE, "incorrect_cvc"),
        ("avs", Outcome.HARD_DECLINE, "incorrect_zip"),
        ("avs_and_cvv", Outcome.HARD_DECLINE, "incorrect_cvc"),
        ("fraud", Outcome.HARD_DECLINE, "fraudulent"),
        ("risk_threshold", Outcome.HARD_DECLINE, "fraudulent"),
        ("duplicate", Outcome.HARD_DECLINE, "duplicate_transaction"),
        ("three_d_secure", Outcome.HARD_DECLINE, "authentication_required"),
        ("application_incomplete", Outcome.SOFT_DECLINE, "processing_error"),
        ("something_new", Outcome.HARD_DECLINE, "card_declined"),
    ],
)
def test_gateway_rejections_classify(reason: str, outcome: Outcome, decline_code: str) -> None:
    assert declines.classify_gateway_rejection(reason) == (outcome, decline_code)


# --- transactions ------------------------------------------------------------------------------------


def test_authorized_transaction_is_approved_not_captured_with_card_summary() -> None:
    result = mapping.transaction_result(transaction())
    assert result.outcome is Outcome.APPROVED
    assert result.reference == "txn1"
    assert result.captured is False
    assert result.card == CardSummary(brand="visa", last4="1111", exp_month=12, exp_year=2030)


@pytest.mark.parametrize("status", ["submitted_for_settlement", "settling", "settled"])
def test_settling_transactions_are_captured(status: str) -> None:
    result = mapping.transaction_result(transaction(status=status))
    assert (result.outcome, result.captured) == (Outcome.APPROVED, True)


def test_processor_declined_transaction_maps_its_code() -> None:
    declined = transaction(
        status="processor_declined",
        processor_response_code="2001",
        processor_response_text="Insufficient Funds",
    )
    result = mapping.transaction_result(declined)
    assert (result.outcome, result.code, result.decline_code) == (
        Outcome.HARD_DECLINE,
        "2001",
        "insufficient_funds",
    )
    assert result.message == "Insufficient Funds"
    assert result.charged is False


def test_failed_transaction_with_3000_is_a_soft_decline() -> None:
    result = mapping.transaction_result(transaction(status="failed", processor_response_code="3000"))
    assert (result.outcome, result.decline_code) == (Outcome.SOFT_DECLINE, "try_again_later")


def test_gateway_rejected_transaction_maps_its_reason() -> None:
    rejected = transaction(status="gateway_rejected", gateway_rejection_reason="cvv", processor_response_code="")
    result = mapping.transaction_result(rejected)
    assert (result.outcome, result.code, result.decline_code) == (
        Outcome.HARD_DECLINE,
        "cvv",
        "incorrect_cvc",
    )


def test_declined_status_with_an_approval_code_is_unknown() -> None:
    contradictory = transaction(status="processor_declined", processor_response_code="1000")
    assert mapping.transaction_result(contradictory).outcome is Outcome.UNKNOWN


def test_voided_transaction_found_later_holds_no_money() -> None:
    result = mapping.transaction_result(transaction(status="voided"))
    assert (result.outcome, result.decline_code) == (Outcome.HARD_DECLINE, "voided")


def test_unexpected_status_is_unknown() -> None:
    assert mapping.transaction_result(transaction(status="something_else")).outcome is Outcome.UNKNOWN


def test_transaction_without_status_raises_for_the_caller_to_treat_as_unknown() -> None:
    broken = braintree.Transaction(None, {"id": "txn1", "amount": "1.00"})
    with pytest.raises(AttributeError):
        mapping.transaction_result(broken)


def test_sdk_result_none_is_unknown() -> None:
    assert mapping.sdk_result(None).outcome is Outcome.UNKNOWN


def test_validation_error_on_nonce_is_a_refused_request() -> None:
    # Issue 18: a validation error created no transaction, so nothing ran; it is the request's
    # fault (the merchant's 400), not the card's decline (it was HARD_DECLINE, invalid_payment_method).
    result = mapping.sdk_result(error_result("91565"))
    assert (result.outcome, result.code, result.decline_code) == (Outcome.NOT_SENT, "91565", None)
    assert (result.request_refused, result.param) == (True, "payment_method")


def test_error_result_carrying_a_declined_transaction_maps_the_transaction() -> None:
    attributes = {
        "status": "processor_declined",
        "processor_response_code": "2000",
        "amount": "1.00",
        "id": "t",
    }
    result = mapping.sdk_result(error_result(transaction=attributes))
    assert (result.outcome, result.decline_code) == (Outcome.SOFT_DECLINE, "do_not_honor")


def test_refusals_of_capture_void_refund_are_hard_declines_with_the_code() -> None:
    for to_result in (mapping.capture_result, mapping.void_result, mapping.refund_result):
        result = to_result(error_result("91506"))
        assert (result.outcome, result.code) == (Outcome.HARD_DECLINE, "91506")


def test_successful_refund_references_the_refund() -> None:
    refund = braintree.SuccessfulResult({"transaction": transaction(id="ref1", type="credit")})
    assert (mapping.refund_result(refund).outcome, mapping.refund_result(refund).reference) == (
        Outcome.APPROVED,
        "ref1",
    )


def test_lookup_without_sales_is_not_sent() -> None:
    assert mapping.lookup_result([]).outcome is Outcome.NOT_SENT
    assert mapping.lookup_result([transaction(type="credit")]).outcome is Outcome.NOT_SENT


def test_lookup_prefers_any_sale_holding_money() -> None:
    declined = transaction(id="t1", status="processor_declined", processor_response_code="2000")
    approved = transaction(id="t2", status="submitted_for_settlement")
    result = mapping.lookup_result([declined, approved])
    assert (result.outcome, result.reference) == (Outcome.APPROVED, "t2")


# --- vault -------------------------------------------------------------------------------------------


def test_vaulted_card_gives_token_and_summary() -> None:
    card = braintree.CreditCard(None, {"token": "pv_1", **VISA})
    result = mapping.vault_result(braintree.SuccessfulResult({"payment_method": card}))
    assert (result.outcome, result.token, result.card) == (
        Outcome.APPROVED,
        "pv_1",
        CardSummary("visa", "1111", 12, 2030),
    )


def test_failed_verification_maps_like_a_decline() -> None:
    declined = {
        "status": "processor_declined",
        "processor_response_code": "2000",
        "processor_response_text": "x",
    }
    rejected = {"status": "gateway_rejected", "gateway_rejection_reason": "fraud"}
    assert mapping.vault_result(error_result(verification=declined)).outcome is Outcome.SOFT_DECLINE
    assert mapping.vault_result(error_result(verification=rejected)).outcome is Outcome.HARD_DECLINE


# --- failures ----------------------------------------------------------------------------------------


def _refused() -> Exception:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/merchants/m/transactions", reason))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (_refused(), Outcome.NOT_SENT),
        (
            requests.exceptions.ConnectTimeout(MaxRetryError(None, "/", NewConnectionError(None, "t"))),
            Outcome.NOT_SENT,
        ),  # type: ignore[arg-type]
        (requests.exceptions.ReadTimeout(ReadTimeoutError(None, "/", "Read timed out.")), Outcome.UNKNOWN),  # type: ignore[arg-type]
        (
            requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError(104))),
            Outcome.UNKNOWN,
        ),
        (ServiceUnavailableError(), Outcome.NOT_SENT),
        (TooManyRequestsError(), Outcome.NOT_SENT),
        (AuthenticationError(), Outcome.NOT_SENT),
        (ServerError(), Outcome.UNKNOWN),
        (GatewayTimeoutError(), Outcome.UNKNOWN),
        (ExpatError("no element found"), Outcome.UNKNOWN),
        (AttributeError("amount"), Outcome.UNKNOWN),
        (TimeoutError(), Outcome.UNKNOWN),
        (RuntimeError("anything else"), Outcome.UNKNOWN),
    ],
)
def test_failures_are_not_sent_only_when_nothing_left_us(exc: Exception, outcome: Outcome) -> None:
    assert mapping.failure_outcome(exc)[0] is outcome


# --- webhooks ----------------------------------------------------------------------------------------


def test_settled_notification_maps_to_payment_succeeded() -> None:
    subject = {"transaction": {"id": "txn1", "order_id": "att_9", "amount": "12.34", "currency_iso_code": "USD"}}
    parsed = braintree.WebhookNotification(None, {"kind": "transaction_settled", "subject": subject})
    event = mapping.notification(parsed, "cGF5bG9hZA==\n")
    assert (event.kind, event.attempt_id, event.reference, event.amount) == (
        "payment.succeeded",
        "att_9",
        "txn1",
        1234,
    )
    assert event.event_id == mapping.notification(parsed, "cGF5bG9hZA==\n").event_id
    assert event.extra["braintree_kind"] == "transaction_settled"


def test_unmapped_notification_kind_is_namespaced() -> None:
    parsed = braintree.WebhookNotification(None, {"kind": "check", "subject": {"check": True}})
    assert mapping.notification(parsed, "x").kind == "check"
    other = braintree.WebhookNotification(None, {"kind": "subscription_expired", "subject": {}})
    assert mapping.notification(other, "y").kind == "braintree.subscription_expired"
