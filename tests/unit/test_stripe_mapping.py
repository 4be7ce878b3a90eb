"""Stripe wire objects -> payorch outcomes, without a network."""

from __future__ import annotations

import httpx
import pytest
import stripe

from payorch.gateways.base import Authentication, CustomerPresence, Outcome, PaymentRequest
from payorch.gateways.stripe import mapping


def _request(card: str) -> PaymentRequest:
    return PaymentRequest("att_1", "mer_1", "ch_1", 1000, "EUR", card, capture=False, description="order 7")


def test_token_becomes_payment_method_data_and_ids_go_in_metadata() -> None:
    params = dict(mapping.payment_intent_params(_request("tok_visa")))

    assert params["payment_method_data"] == {"type": "card", "card": {"token": "tok_visa"}}
    assert "payment_method" not in params
    assert params["capture_method"] == "manual"
    assert params["currency"] == "eur"
    assert params["confirm"] is True
    assert params["metadata"] == {"merchant_id": "mer_1", "charge_id": "ch_1", "attempt_id": "att_1"}


def test_payment_method_id_is_passed_as_is() -> None:
    params = dict(mapping.payment_intent_params(_request("pm_123")))

    assert params["payment_method"] == "pm_123"
    assert "payment_method_data" not in params


def test_params_are_identical_for_a_replay() -> None:
    assert mapping.payment_intent_params(_request("tok_visa")) == mapping.payment_intent_params(_request("tok_visa"))


@pytest.mark.parametrize(
    ("status", "outcome", "captured"),
    [
        ("succeeded", Outcome.APPROVED, True),
        ("requires_capture", Outcome.APPROVED, False),
        ("canceled", Outcome.APPROVED, False),
        ("processing", Outcome.UNKNOWN, False),
        ("requires_confirmation", Outcome.UNKNOWN, False),
        ("requires_action", Outcome.SOFT_DECLINE, False),
    ],
)
def test_payment_intent_status(status: str, outcome: Outcome, captured: bool) -> None:
    result = mapping.result_from_payment_intent({"id": "pi_1", "status": status})

    assert result.outcome is outcome
    assert result.captured is captured
    assert result.reference == "pi_1"


def test_payment_intent_without_status_is_unknown() -> None:
    assert mapping.result_from_payment_intent({"id": "pi_1"}).outcome is Outcome.UNKNOWN
    assert mapping.result_from_payment_intent({"status": "succeeded"}).outcome is Outcome.UNKNOWN


def test_declined_intent_carries_its_last_error() -> None:
    intent = {
        "id": "pi_1",
        "status": "requires_payment_method",
        "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "lost_card"},
    }

    result = mapping.result_from_payment_intent(intent)

    assert (result.outcome, result.decline_code, result.code) == (
        Outcome.HARD_DECLINE,
        "lost_card",
        "card_declined",
    )


def test_card_summary_from_an_expanded_payment_method() -> None:
    intent = {
        "id": "pi_1",
        "status": "succeeded",
        "payment_method": {
            "id": "pm_1",
            "card": {"brand": "visa", "last4": "4242", "exp_month": 4, "exp_year": 2031},
        },
    }

    card = mapping.result_from_payment_intent(intent).card

    assert card is not None
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 4, 2031)
    assert mapping.card_summary("pm_1") is None


@pytest.mark.parametrize(
    "code",
    [
        "insufficient_funds",
        "lost_card",
        "stolen_card",
        "incorrect_number",
        "incorrect_cvc",
        "expired_card",
        "fraudulent",
        "do_not_honor",
        "card_declined",
        "some_code_stripe_adds_next_year",
    ],
)
def test_hard_declines(code: str) -> None:
    assert mapping.decline_outcome(code) is Outcome.HARD_DECLINE


@pytest.mark.parametrize(
    "code",
    ["try_again_later", "issuer_not_available", "processing_error", "approve_with_id", "reenter_transaction"],
)
def test_soft_declines(code: str) -> None:
    assert mapping.decline_outcome(code) is Outcome.SOFT_DECLINE


def _error(status: int, error: dict[str, object] | None, headers: dict[str, str] | None = None) -> stripe.StripeError:
    body = {"error": error} if error is not None else None
    return stripe.APIError("boom", "{}", status, body, headers or {})


def test_402_generic_decline_is_normalised_to_card_declined() -> None:
    error = stripe.CardError(
        "declined",
        None,
        "card_declined",
        "{}",
        402,
        {
            "error": {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "payment_intent": {"id": "pi_9", "status": "requires_payment_method"},
            }
        },
        {},
    )

    result = mapping.result_from_error(error)

    assert (result.outcome, result.decline_code, result.reference) == (
        Outcome.HARD_DECLINE,
        "card_declined",
        "pi_9",
    )


@pytest.mark.parametrize(
    ("status", "error", "headers", "outcome"),
    [
        (429, {"type": "rate_limit_error", "code": "rate_limit"}, {}, Outcome.NOT_SENT),
        (503, {"type": "api_error"}, {"Stripe-Should-Retry": "true"}, Outcome.NOT_SENT),
        (503, {"type": "api_error"}, {"stripe-should-retry": "false"}, Outcome.UNKNOWN),
        (503, {"type": "api_error"}, {}, Outcome.UNKNOWN),
        (500, {"type": "api_error"}, {"Stripe-Should-Retry": "true"}, Outcome.UNKNOWN),
        (502, None, {}, Outcome.UNKNOWN),
        (409, {"type": "idempotency_error", "code": "idempotency_key_in_use"}, {}, Outcome.UNKNOWN),
        (409, {"type": "invalid_request_error", "code": "lock_timeout"}, {}, Outcome.NOT_SENT),
        (400, {"type": "idempotency_error"}, {}, Outcome.UNKNOWN),
        (400, {"type": "invalid_request_error", "code": "resource_missing"}, {}, Outcome.NOT_SENT),
        (401, {"type": "invalid_request_error"}, {}, Outcome.NOT_SENT),
        (200, None, {}, Outcome.UNKNOWN),
    ],
)
def test_error_answers(status: int, error: dict[str, object] | None, headers: dict[str, str], outcome: Outcome) -> None:
    assert mapping.result_from_error(_error(status, error, headers)).outcome is outcome


def _connection_error(cause: BaseException) -> stripe.APIConnectionError:
    try:
        raise stripe.APIConnectionError("network") from cause
    except stripe.APIConnectionError as error:
        return error


@pytest.mark.parametrize(
    ("cause", "outcome"),
    [
        (httpx.ConnectError("refused"), Outcome.NOT_SENT),
        (httpx.ConnectError("[Errno -2] Name or service not known"), Outcome.NOT_SENT),
        (httpx.ConnectTimeout("connect"), Outcome.NOT_SENT),
        (httpx.PoolTimeout("pool"), Outcome.NOT_SENT),
        (httpx.ReadTimeout("read"), Outcome.UNKNOWN),
        (httpx.WriteTimeout("write"), Outcome.UNKNOWN),
        (httpx.RemoteProtocolError("server disconnected"), Outcome.UNKNOWN),
        (httpx.ReadError("reset"), Outcome.UNKNOWN),
        (ValueError("anything else"), Outcome.UNKNOWN),
    ],
)
def test_transport_errors(cause: BaseException, outcome: Outcome) -> None:
    assert mapping.result_from_error(_connection_error(cause)).outcome is outcome


def test_lookup_keeps_not_sent_only_for_refusals_before_execution() -> None:
    refused = mapping.result_from_error(_error(400, {"type": "invalid_request_error", "code": "resource_missing"}))
    limited = mapping.result_from_error(_error(429, {"type": "rate_limit_error"}))

    assert mapping.lookup_result(refused, 400).outcome is Outcome.NOT_SENT
    assert mapping.lookup_result(limited, 429).outcome is Outcome.UNKNOWN
    assert (
        mapping.lookup_result(mapping.result_from_error(_connection_error(httpx.ConnectError("x"))), None).outcome
        is Outcome.UNKNOWN
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("succeeded", Outcome.APPROVED), ("pending", Outcome.APPROVED), ("failed", Outcome.HARD_DECLINE)],
)
def test_refund_status(status: str, outcome: Outcome) -> None:
    assert mapping.result_from_refund({"id": "re_1", "status": status}).outcome is outcome


def test_refund_event_maps_to_the_payment_intent() -> None:
    event = {
        "id": "evt_2",
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": "pi_1",
                "amount": 700,
                "metadata": {"attempt_id": "att_1"},
            }
        },
    }

    notification = mapping.notification_from_event(event)

    assert (notification.kind, notification.reference, notification.amount) == (
        "refund.succeeded",
        "pi_1",
        700,
    )
    assert notification.attempt_id == "att_1"


def test_unknown_event_type_is_kept_but_marked_unhandled() -> None:
    event = {"id": "evt_3", "type": "customer.created", "data": {"object": {"id": "cus_1"}}}

    assert mapping.notification_from_event(event).kind == "unhandled.customer.created"


def test_malformed_event_is_refused() -> None:
    with pytest.raises(ValueError, match="not a Stripe event"):
        mapping.notification_from_event({"id": "evt_4"})


@pytest.mark.parametrize(
    ("status", "error", "refused"),
    [
        (400, {"type": "invalid_request_error", "code": "resource_missing"}, True),  # a bad token
        (404, {"type": "invalid_request_error", "code": "resource_missing"}, True),
        (401, {"type": "invalid_request_error"}, False),  # our key: every request fails, the breaker counts it
        (429, {"type": "rate_limit_error", "code": "rate_limit"}, False),
    ],
)
def test_only_this_requests_own_refusals_spare_the_breaker(
    status: int, error: dict[str, object], refused: bool
) -> None:
    result = mapping.result_from_error(_error(status, error))
    assert result.outcome is Outcome.NOT_SENT
    assert result.request_refused is refused


def test_a_return_url_and_stored_credential_flags_reach_the_payment_intent() -> None:
    present = PaymentRequest(
        "att_1", "mer_1", "ch_1", 1000, "eur", "pm_1",
        presence=CustomerPresence(return_url="https://shop.example/done", setup_future_usage=True),
    )  # fmt: skip
    absent = PaymentRequest("att_2", "mer_1", "ch_2", 1000, "eur", "pm_1", presence=CustomerPresence(off_session=True))
    retried = PaymentRequest(
        "att_3", "mer_1", "ch_3", 1000, "eur", "pm_1", presence=CustomerPresence(request_authentication=True)
    )

    first = dict(mapping.payment_intent_params(present))
    later = dict(mapping.payment_intent_params(absent, "any"))

    assert first["return_url"] == "https://shop.example/done"
    assert first["automatic_payment_methods"] == {"enabled": True}
    assert first["setup_future_usage"] == "off_session"
    assert "payment_method_options" not in first  # automatic: Stripe and the issuer decide
    assert later["off_session"] is True
    assert later["payment_method_options"] == {"card": {"request_three_d_secure": "any"}}
    assert dict(mapping.payment_intent_params(retried))["payment_method_options"] == {
        "card": {"request_three_d_secure": "challenge"}
    }


def test_requires_action_passes_stripes_next_action_through() -> None:
    redirect = {
        "type": "redirect_to_url",
        "redirect_to_url": {"url": "https://hooks.stripe.test/3ds", "return_url": "https://r"},
    }
    with_redirect = mapping.result_from_payment_intent(
        {"id": "pi_1", "status": "requires_action", "next_action": redirect, "client_secret": "pi_1_secret_x"}, "eu"
    )
    with_sdk = mapping.result_from_payment_intent(
        {"id": "pi_2", "status": "requires_action", "next_action": {"type": "use_stripe_sdk"}, "client_secret": "s"}
    )

    assert with_redirect.outcome is Outcome.ACTION_REQUIRED
    assert with_redirect.next_action is not None
    assert with_redirect.next_action.render() == {
        "type": "redirect_to_url",
        "redirect_to_url": redirect["redirect_to_url"],
    }
    assert with_sdk.next_action is not None
    assert with_sdk.next_action.render() == {
        "type": "gateway_sdk",
        "gateway_sdk": {"gateway": "stripe", "account": "stripe", "client_secret": "s"},
    }


def test_the_charges_three_d_secure_result_and_network_transaction_id_are_read() -> None:
    charge = {
        "payment_method_details": {
            "card": {"three_d_secure": {"result": "authenticated", "version": "2.2.0"}, "network_transaction_id": "n1"}
        }
    }
    failed = {"code": "payment_intent_authentication_failure", "type": "invalid_request_error"}

    ok = mapping.result_from_payment_intent({"id": "pi_1", "status": "succeeded", "latest_charge": charge})
    refused = mapping.result_from_payment_intent(
        {"id": "pi_2", "status": "requires_payment_method", "last_payment_error": failed}
    )

    assert ok.authentication == Authentication("succeeded", "2.2.0", liability_shifted=True)
    assert ok.network_transaction_id == "n1"
    assert (refused.outcome, refused.decline_code) == (Outcome.HARD_DECLINE, "authentication_failed")
