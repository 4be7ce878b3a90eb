"""Adyen Checkout messages -> payorch outcomes, without a network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from payorch.gateways.adyen import mapping
from payorch.gateways.base import CustomerPresence, Outcome, PaymentRequest

CARD = json.dumps({"type": "scheme", "encryptedCardNumber": "adyenjs_x"})
KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


def _request(token: str, *, capture: bool = True) -> PaymentRequest:
    return PaymentRequest("att_1", "mer_1", "ch_1", 1000, "eur", token, capture=capture)


def test_stored_token_becomes_a_stored_payment_method_with_its_shopper() -> None:
    body = mapping.payment_body(_request("stored:pm_1:8415"), "Acct")

    assert body["paymentMethod"] == {"type": "scheme", "storedPaymentMethodId": "8415"}
    assert body["shopperReference"] == "pm_1"
    assert (body["shopperInteraction"], body["recurringProcessingModel"]) == ("ContAuth", "CardOnFile")
    assert body["reference"] == "att_1"
    assert body["amount"] == {"currency": "EUR", "value": 1000}
    assert body["metadata"] == {"merchant_id": "mer_1", "charge_id": "ch_1", "attempt_id": "att_1"}


def test_capture_flags() -> None:
    encrypted = json.dumps({"type": "scheme", "encryptedCardNumber": "adyenjs_x"})

    assert mapping.payment_body(_request(encrypted), "Acct")["captureDelayHours"] == 0
    manual = mapping.payment_body(_request(encrypted, capture=False), "Acct")
    assert manual["additionalData"] == {"manualCapture": "true"}
    assert "captureDelayHours" not in manual


@pytest.mark.parametrize(
    "token",
    [
        "stored:only-one-part",
        "not json",
        "[1]",
        '{"encryptedCardNumber": "x"}',
        '{"type": "scheme", "number": "4111"}',
    ],
)
def test_unusable_tokens_are_refused(token: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        mapping.payment_method_from_token(token)


@pytest.mark.parametrize(
    ("body", "outcome", "decline_code"),
    [
        ({"resultCode": "Authorised"}, Outcome.APPROVED, None),
        ({"resultCode": "Refused", "refusalReasonCode": "12"}, Outcome.HARD_DECLINE, "insufficient_funds"),
        ({"resultCode": "Refused", "refusalReasonCode": "6"}, Outcome.HARD_DECLINE, "expired_card"),
        ({"resultCode": "Refused", "refusalReasonCode": "24"}, Outcome.HARD_DECLINE, "incorrect_cvc"),
        ({"resultCode": "Refused", "refusalReasonCode": "20"}, Outcome.HARD_DECLINE, "fraudulent"),
        ({"resultCode": "Refused", "refusalReasonCode": "9"}, Outcome.SOFT_DECLINE, "issuer_not_available"),
        ({"resultCode": "Refused", "refusalReasonCode": "999"}, Outcome.HARD_DECLINE, "card_declined"),
        ({"resultCode": "Error"}, Outcome.SOFT_DECLINE, "processing_error"),
        ({"resultCode": "Cancelled"}, Outcome.SOFT_DECLINE, "cancelled"),
        ({"resultCode": "RedirectShopper"}, Outcome.SOFT_DECLINE, "authentication_required"),
        ({"resultCode": "Received"}, Outcome.UNKNOWN, None),
        ({"resultCode": "Pending"}, Outcome.UNKNOWN, None),
        ({}, Outcome.UNKNOWN, None),
    ],
)
def test_result_codes(body: dict[str, str], outcome: Outcome, decline_code: str | None) -> None:
    result = mapping.result_from_payment({"pspReference": "PSP1", **body}, capture=True)

    assert (result.outcome, result.decline_code) == (outcome, decline_code)
    assert result.reference == "PSP1"


def test_card_summary() -> None:
    card = mapping.card_summary(
        {
            "paymentMethod": {"brand": "mc"},
            "additionalData": {"cardSummary": "4444", "expiryDate": "3/2030"},
        }
    )

    assert card is not None
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("mc", "4444", 3, 2030)
    assert mapping.card_summary({}) is None


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (401, {"errorCode": "000"}, Outcome.NOT_SENT),
        (403, {"errorCode": "901"}, Outcome.NOT_SENT),
        (429, None, Outcome.NOT_SENT),
        (422, {"errorCode": "174", "errorType": "validation"}, Outcome.NOT_SENT),
        (422, {"errorCode": "704", "errorType": "validation"}, Outcome.UNKNOWN),
        (422, None, Outcome.UNKNOWN),
        (500, {"errorCode": "905"}, Outcome.UNKNOWN),
        (502, None, Outcome.UNKNOWN),
        (503, {"errorCode": "000"}, Outcome.UNKNOWN),
    ],
)
def test_error_answers(status: int, body: object, outcome: Outcome) -> None:
    assert mapping.result_from_error(status, body).outcome is outcome


def test_lookup_turns_a_refused_replay_into_unknown_but_keeps_validation_refusals() -> None:
    limited = mapping.result_from_error(429, None)
    invalid = mapping.result_from_error(422, {"errorCode": "174"})

    assert mapping.lookup_result(limited, 429).outcome is Outcome.UNKNOWN
    assert mapping.lookup_result(invalid, 422).outcome is Outcome.NOT_SENT


def test_modification_received_is_approved() -> None:
    result = mapping.result_from_modification({"status": "received", "pspReference": "MOD1"})

    assert (result.outcome, result.reference) == (Outcome.APPROVED, "MOD1")
    assert mapping.result_from_modification({"status": "weird"}).outcome is Outcome.UNKNOWN


def _item() -> dict[str, object]:
    return {
        "pspReference": "7914073381342284",
        "originalReference": "8313842560770001",
        "merchantAccountCode": "Acct",
        "merchantReference": "att_9",
        "amount": {"value": 500, "currency": "EUR"},
        "eventCode": "REFUND",
        "success": "true",
    }


def test_signature_covers_the_standard_fields_in_order() -> None:
    signing = "7914073381342284:8313842560770001:Acct:att_9:500:EUR:REFUND:true"
    expected = base64.b64encode(hmac.new(bytes.fromhex(KEY), signing.encode(), hashlib.sha256).digest()).decode()

    assert mapping.notification_signature(_item(), KEY) == expected


def test_verification_needs_the_right_signature() -> None:
    item = {**_item(), "additionalData": {"hmacSignature": mapping.notification_signature(_item(), KEY)}}

    assert mapping.verify_notification_item(item, KEY)
    assert not mapping.verify_notification_item({**item, "success": "false"}, KEY)
    assert not mapping.verify_notification_item(_item(), KEY)


def test_refund_notification_points_at_the_original_payment() -> None:
    notification = mapping.notification_from_item(_item())

    assert notification.kind == "refund.succeeded"
    assert notification.reference == "8313842560770001"
    assert notification.attempt_id == "att_9"
    assert notification.event_id == "adyen:7914073381342284:REFUND:true"


@pytest.mark.parametrize(
    ("event_code", "success", "kind"),
    [
        ("AUTHORISATION", "false", "payment.failed"),
        ("CAPTURE", "true", "payment.captured"),
        ("CANCELLATION", "true", "payment.canceled"),
        ("CHARGEBACK", "true", "dispute.created"),
        ("REPORT_AVAILABLE", "true", "unhandled.REPORT_AVAILABLE"),
    ],
)
def test_event_kinds(event_code: str, success: str, kind: str) -> None:
    assert mapping.notification_from_item({**_item(), "eventCode": event_code, "success": success}).kind == kind


def test_batches_are_refused() -> None:
    wrapper = {"NotificationRequestItem": _item()}

    with pytest.raises(ValueError, match="exactly one"):
        mapping.single_notification_item({"notificationItems": [wrapper, wrapper]})


def test_validation_refusals_spare_the_breaker_but_a_refused_api_key_does_not() -> None:
    invalid = mapping.result_from_error(422, {"errorCode": "174", "message": "Unable to decrypt data"})
    unauthorized = mapping.result_from_error(401, {"errorCode": "000"})
    assert (invalid.outcome, invalid.request_refused) == (Outcome.NOT_SENT, True)
    assert (unauthorized.outcome, unauthorized.request_refused) == (Outcome.NOT_SENT, False)


def test_three_d_secure_fields_are_passed_through_and_off_session_is_merchant_initiated() -> None:
    presence = CustomerPresence(
        return_url="https://shop.example/done",
        browser_info={"userAgent": "Mozilla/5.0", "colorDepth": 24},
        authentication_data={"threeDSRequestData": {"nativeThreeDS": "preferred"}},
    )
    on_session = mapping.payment_body(
        PaymentRequest("att_1", "mer_1", "ch_1", 1000, "eur", CARD, presence=presence), "A"
    )
    off = CustomerPresence(off_session=True, network_transaction_id="NTX1")
    off_session = mapping.payment_body(PaymentRequest("att_2", "mer_1", "ch_2", 1000, "eur", CARD, presence=off), "A")

    assert (on_session["returnUrl"], on_session["channel"]) == ("https://shop.example/done", "Web")
    assert on_session["browserInfo"] == {"userAgent": "Mozilla/5.0", "colorDepth": 24}
    assert on_session["authenticationData"] == {"threeDSRequestData": {"nativeThreeDS": "preferred"}}
    assert (off_session["shopperInteraction"], off_session["recurringProcessingModel"]) == (
        "ContAuth",
        "UnscheduledCardOnFile",
    )
    assert off_session["additionalData"]["networkTxReference"] == "NTX1"


def test_an_action_becomes_a_next_action() -> None:
    get = {"type": "redirect", "method": "GET", "url": "https://test.adyen.test/3ds"}
    native = {"type": "threeDS2", "subtype": "challenge", "token": "t"}

    redirected = mapping.result_from_payment(
        {"pspReference": "P1", "resultCode": "RedirectShopper", "action": get},
        capture=True,
        account="eu",
        return_url="https://r",
    )
    challenged = mapping.result_from_payment(
        {"pspReference": "P2", "resultCode": "ChallengeShopper", "action": native}, capture=True, account="eu"
    )

    assert redirected.outcome is challenged.outcome is Outcome.ACTION_REQUIRED
    assert redirected.next_action is not None
    assert redirected.next_action.render()["redirect_to_url"] == {"url": get["url"], "return_url": "https://r"}
    assert challenged.next_action is not None
    assert challenged.next_action.render() == {
        "type": "gateway_sdk",
        "gateway_sdk": {"gateway": "adyen", "account": "eu", "action": native},
    }
