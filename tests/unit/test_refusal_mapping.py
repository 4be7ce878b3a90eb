"""How each gateway's refusal of a request is read (issue 18): the request's fault and the field it
names, or, where the card's own data is wrong, the card's decline; and how a gateway's words are
bounded and redacted before a merchant sees them."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from payorch.gateways.adyen import mapping as adyen
from payorch.gateways.base import Outcome
from payorch.gateways.stripe import mapping as stripe_mapping
from payorch.payments import refusals

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    import braintree

from payorch.gateways.braintree import mapping as braintree_mapping


def braintree_error(code: str) -> Any:
    errors = {"transaction": {"errors": [{"code": code, "attribute": "base", "message": f"error {code}"}]}}
    return braintree.ErrorResult(None, {"errors": errors, "message": "refused"})


@pytest.mark.parametrize(
    ("error", "param"),
    [
        ({"code": "resource_missing", "param": "payment_method"}, "payment_method"),
        ({"code": "resource_missing", "param": "payment_method_data[card][token]"}, "payment_method"),
        ({"code": "token_already_used"}, "payment_method"),
        ({"code": "amount_too_small", "param": "amount"}, "amount"),
        ({"code": "parameter_invalid", "param": "currency"}, "currency"),
        ({"code": "parameter_unknown", "param": "metadata[x]"}, None),
    ],
)
def test_stripe_names_the_refused_field_in_payorchs_words(error: dict[str, str], param: str | None) -> None:
    result = stripe_mapping.result_from_error_response(400, {}, {"error": {"type": "invalid_request_error", **error}})
    assert (result.outcome, result.request_refused, result.param) == (Outcome.NOT_SENT, True, param)


def test_a_refused_stripe_api_key_names_no_field() -> None:
    result = stripe_mapping.result_from_error_response(401, {}, {"error": {"type": "invalid_request_error"}})
    assert (result.request_refused, result.param) == (False, None)


@pytest.mark.parametrize(
    ("code", "param"), [("174", "payment_method"), ("137", "amount"), ("138", "currency"), ("130", None)]
)
def test_adyen_validation_is_a_refused_request(code: str, param: str | None) -> None:
    result = adyen.result_from_error(422, {"status": 422, "errorCode": code, "message": "m", "errorType": "validation"})
    assert (result.outcome, result.request_refused, result.code, result.param) == (Outcome.NOT_SENT, True, code, param)


@pytest.mark.parametrize(
    ("code", "decline_code"), [("101", "incorrect_number"), ("103", "invalid_cvc"), ("129", "invalid_expiry_year")]
)
def test_adyen_card_data_errors_are_the_cards_decline(code: str, decline_code: str) -> None:
    result = adyen.result_from_error(422, {"status": 422, "errorCode": code, "message": "m", "errorType": "validation"})
    assert (result.outcome, result.decline_code, result.request_refused) == (Outcome.HARD_DECLINE, decline_code, False)


@pytest.mark.parametrize(
    ("code", "outcome", "param", "decline_code"),
    [
        ("91564", Outcome.NOT_SENT, "payment_method", None),
        ("81531", Outcome.NOT_SENT, "amount", None),
        ("81501", Outcome.NOT_SENT, None, None),
        ("81715", Outcome.HARD_DECLINE, None, "incorrect_number"),
        ("81712", Outcome.HARD_DECLINE, None, "invalid_expiry_month"),
    ],
)
def test_braintree_validation_is_refused_unless_the_cards_data_is_wrong(
    code: str, outcome: Outcome, param: str | None, decline_code: str | None
) -> None:
    result = braintree_mapping.sdk_result(braintree_error(code))
    assert (result.outcome, result.param, result.decline_code, result.code) == (outcome, param, decline_code, code)
    assert result.request_refused is (outcome is Outcome.NOT_SENT)
    assert result.message == f"error {code}"


def test_a_gateways_words_are_redacted_flattened_and_bounded() -> None:
    words = "Card 4242 4242 4242 4242\nwith key sk_live_" + "a" * 30 + "\x00\u2028" + "z" * 500

    reason = refusals.reason("stripe", Outcome.NOT_SENT, "c" * 100, words, refused=True)

    assert reason.startswith("stripe refused: Card ")
    assert "4242 4242 4242 4242" not in reason
    assert "sk_live_" + "a" * 30 not in reason
    assert not any(c in reason for c in "\n\x00\u2028")
    assert len(reason) <= len("stripe refused: ") + refusals.MESSAGE_LIMIT + refusals.CODE_LIMIT + 3
    assert f"({'c' * (refusals.CODE_LIMIT - 1)}…)" in reason


def test_unreachable_and_silent_gateways_are_worded_apart() -> None:
    assert refusals.reason("a", Outcome.NOT_SENT, "503", None, refused=False) == "a could not be reached (503)"
    assert refusals.reason("b", Outcome.UNKNOWN, None, None, refused=False) == "b did not answer in time"
    assert len(refusals.joined(["x" * 300] * 8)) == refusals.TOTAL_LIMIT
