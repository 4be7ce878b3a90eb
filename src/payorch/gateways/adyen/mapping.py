"""Pure translation between Adyen Checkout API (v71) messages and payorch's gateway results.

Which answers count as NOT_SENT (provably never executed):

- a transport error before the request was written (refused, DNS, connect timeout, TLS, pool:
  :func:`payorch.gateways.transport.transport_outcome`);
- HTTP 401/403 (the API key was refused), HTTP 429, and HTTP 400/404/422 validation errors other
  than ``errorCode`` 704 (Adyen validates before processing and keeps no idempotent result).

Adyen's 5xx (500, 502, 503) carry no "nothing ran" statement, so they are UNKNOWN and resolved by
replaying with the same Idempotency-Key; so are 422/704 ("request already processed or in
progress"), read timeouts, resets, bodies that are not JSON and results without a ``resultCode``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from payorch.gateways.base import (
    Authentication,
    CardSummary,
    GatewayNotification,
    GatewayResult,
    NextAction,
    Outcome,
    PaymentRequest,
)
from payorch.gateways.cards import card_bin, issuing_country

IN_PROGRESS_ERROR_CODE = "704"
STORED_PREFIX = "stored:"

# refusalReasonCode -> (normalised decline code, soft?)
REFUSAL_REASONS: dict[str, tuple[str, bool]] = {
    "2": ("card_declined", False),
    "3": ("call_issuer", False),
    "4": ("processing_error", True),
    "5": ("pickup_card", False),
    "6": ("expired_card", False),
    "7": ("invalid_amount", False),
    "8": ("incorrect_number", False),
    "9": ("issuer_not_available", True),
    "10": ("card_not_supported", False),
    "11": ("authentication_failed", False),
    "12": ("insufficient_funds", False),
    "14": ("fraudulent", False),
    "15": ("cancelled", False),
    "16": ("cancelled", False),
    "17": ("incorrect_pin", False),
    "18": ("pin_try_exceeded", False),
    "20": ("fraudulent", False),
    "21": ("try_again_later", True),
    "22": ("fraudulent", False),
    "23": ("transaction_not_allowed", False),
    "24": ("incorrect_cvc", False),
    "25": ("restricted_card", False),
    "26": ("revocation_of_authorization", False),
    "27": ("do_not_honor", False),
    "28": ("withdrawal_count_limit_exceeded", False),
    "29": ("withdrawal_count_limit_exceeded", False),
    "31": ("fraudulent", False),
    "38": ("authentication_required", True),
    "42": ("authentication_required", True),
    "46": ("do_not_try_again", False),
}

# Validation errorCodes about the card's own data (101 invalid card number, 103 CVC length, 129
# expiry date invalid) -> the decline code Stripe gives the same mistake.
CARD_DATA_ERRORS: dict[str, str] = {"101": "incorrect_number", "103": "invalid_cvc", "129": "invalid_expiry_year"}

# Validation errorCodes -> the payorch field they are about: the payment method's encrypted data
# (102 variant, 172-174 decryption), the amount (100 missing, 137 invalid), the currency (138).
_REFUSED_PARAMS: dict[str, str] = {
    "102": "payment_method",
    "172": "payment_method",
    "173": "payment_method",
    "174": "payment_method",
    "100": "amount",
    "137": "amount",
    "138": "currency",
}

_NOTIFICATION_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


def payment_method_from_token(token: str) -> tuple[dict[str, Any], str | None]:
    """The ``paymentMethod`` object and ``shopperReference`` a token stands for.

    ``stored:<shopperReference>:<storedPaymentMethodId>`` is what :meth:`vault` returns; a JSON
    object is the Drop-in/Components ``state.data.paymentMethod`` (encrypted card fields). Raw card
    fields are refused: payorch never carries a card number.
    """
    if token.startswith(STORED_PREFIX):
        shopper, _, stored_id = token.removeprefix(STORED_PREFIX).partition(":")
        if not shopper or not stored_id:
            raise ValueError("stored token must be stored:<shopperReference>:<storedPaymentMethodId>")
        return {"type": "scheme", "storedPaymentMethodId": stored_id}, shopper
    try:
        method = json.loads(token)
    except ValueError:
        raise ValueError("not an Adyen payment method token") from None
    if not isinstance(method, dict) or not isinstance(method.get("type"), str):
        raise ValueError("payment method object needs a type")
    if {"number", "cvc", "expiryMonth"} & method.keys():
        raise ValueError("raw card fields are refused; send encrypted fields")
    return method, None


def payment_body(request: PaymentRequest, merchant_account: str) -> dict[str, Any]:
    """The ``/payments`` body; identical for a first try and for its replay in lookup."""
    method, shopper = payment_method_from_token(request.token)
    body: dict[str, Any] = {
        "merchantAccount": merchant_account,
        "reference": request.attempt_id,
        "amount": {"currency": request.currency.upper(), "value": request.amount},
        "paymentMethod": method,
        "shopperInteraction": "ContAuth" if shopper else "Ecommerce",
        "metadata": {
            "merchant_id": request.merchant_id,
            "charge_id": request.charge_id,
            "attempt_id": request.attempt_id,
        },
    }
    if shopper:
        body["shopperReference"] = shopper
        body["recurringProcessingModel"] = "CardOnFile"
    body.update(_authentication_fields(request))
    if request.capture:
        body["captureDelayHours"] = 0
    else:
        body["additionalData"] = {"manualCapture": "true"}
    if request.presence.off_session and request.presence.network_transaction_id:
        body["additionalData"] = {**body.get("additionalData", {}),
                                  "networkTxReference": request.presence.network_transaction_id}  # fmt: skip
    if request.description:
        body["shopperStatement"] = request.description[:22]
    return body


def _authentication_fields(request: PaymentRequest) -> dict[str, Any]:
    """3-D Secure 2 (``returnUrl``, ``browserInfo``, ``authenticationData`` passed through) and the
    stored-credential model: a customer-present charge that sets one up, or a merchant-initiated one."""
    presence = request.presence
    fields: dict[str, Any] = {}
    if presence.return_url is not None:
        fields.update(returnUrl=presence.return_url, channel="Web")
    if presence.browser_info:
        fields["browserInfo"] = dict(presence.browser_info)
    authentication = dict(presence.authentication_data or {})
    if presence.request_authentication:
        authentication["attemptAuthentication"] = "always"
    if authentication:
        fields["authenticationData"] = authentication
    if presence.setup_future_usage:
        # The shopper is here and agrees to later charges: a customer-initiated first use of the card on file.
        fields.update(shopperInteraction="Ecommerce", recurringProcessingModel="UnscheduledCardOnFile")
    if presence.off_session:
        fields.update(shopperInteraction="ContAuth", recurringProcessingModel="UnscheduledCardOnFile")
    return fields


def details_body(details: Mapping[str, str]) -> dict[str, Any]:
    """``/payments/details`` after the shopper came back: what came back with them, as it came."""
    return {"details": dict(details)}


def vault_body(method: dict[str, Any], shopper_reference: str, merchant_account: str) -> dict[str, Any]:
    """A zero-value authorisation that stores the card for ``shopper_reference``."""
    return {
        "merchantAccount": merchant_account,
        "reference": shopper_reference,
        "amount": {"currency": "EUR", "value": 0},
        "paymentMethod": method,
        "shopperReference": shopper_reference,
        "storePaymentMethod": True,
        "shopperInteraction": "Ecommerce",
        "recurringProcessingModel": "CardOnFile",
    }


def card_summary(payment: Mapping[str, Any]) -> CardSummary | None:
    """What ``additionalData`` tells of the card; ``cardBin`` and ``issuerCountry`` only where the
    merchant account has those fields switched on."""
    extra = payment.get("additionalData")
    extra = extra if isinstance(extra, Mapping) else {}
    method = payment.get("paymentMethod")
    brand = method.get("brand") if isinstance(method, Mapping) else None
    brand = brand or extra.get("paymentMethod")
    last4, expiry = extra.get("cardSummary"), extra.get("expiryDate")
    if not (brand or last4):
        return None
    month, _, year = str(expiry or "").partition("/")
    return CardSummary(
        brand=str(brand) if brand else None,
        last4=str(last4) if last4 else None,
        exp_month=int(month) if month.isdigit() else None,
        exp_year=int(year) if year.isdigit() else None,
        bin=card_bin(extra.get("cardBin")),
        country=issuing_country(extra.get("issuerCountry") or extra.get("cardIssuingCountry")),
    )


def refusal(code: str | None) -> tuple[Outcome, str]:
    """A refusalReasonCode's outcome and normalised decline code; unknown codes are hard."""
    decline_code, soft = REFUSAL_REASONS.get(code or "", ("card_declined", False))
    return (Outcome.SOFT_DECLINE if soft else Outcome.HARD_DECLINE), decline_code


def result_from_payment(
    body: Mapping[str, Any], *, capture: bool, account: str = "adyen", return_url: str | None = None
) -> GatewayResult:
    """Map a 200 ``/payments`` (or ``/payments/details``) answer by its ``resultCode``; ``account``
    and ``return_url`` go into a ``next_action``."""
    reference = body.get("pspReference") if isinstance(body.get("pspReference"), str) else None
    result_code = body.get("resultCode")
    message = body.get("refusalReason") if isinstance(body.get("refusalReason"), str) else None
    authentication, network_transaction_id = _three_d_secure(body)
    match result_code:
        case "Authorised":
            return GatewayResult(
                Outcome.APPROVED,
                reference,
                result_code,
                card=card_summary(body),
                captured=capture,
                authentication=authentication,
                network_transaction_id=network_transaction_id,
            )
        case "Refused":
            reason = body.get("refusalReasonCode")
            outcome, decline_code = refusal(reason if isinstance(reason, str) else None)
            return GatewayResult(
                outcome, reference, result_code, decline_code, message, card_summary(body),
                authentication=authentication,
            )  # fmt: skip
        case "Error":
            # Adyen's own "an error occurred while processing": a final not-authorised answer.
            return GatewayResult(Outcome.SOFT_DECLINE, reference, result_code, "processing_error", message)
        case "Cancelled":
            return GatewayResult(Outcome.SOFT_DECLINE, reference, result_code, "cancelled", message)
        case "RedirectShopper" | "IdentifyShopper" | "ChallengeShopper":
            action = body.get("action")
            if isinstance(action, Mapping) and reference is not None:
                return GatewayResult(
                    Outcome.ACTION_REQUIRED,
                    reference,
                    result_code,
                    message=message,
                    next_action=next_action(action, account, return_url),
                    authentication=Authentication("required"),
                )
            # 3-D Secure wanted and nothing a shopper could follow: nothing will be charged.
            return GatewayResult(Outcome.SOFT_DECLINE, reference, result_code, "authentication_required", message)
    # Received, Pending, PresentToShopper, anything new: the final result comes by webhook.
    return GatewayResult(Outcome.UNKNOWN, reference, str(result_code) if result_code else "invalid_response", message)


def next_action(action: Mapping[str, Any], account: str, return_url: str | None) -> NextAction:
    """A plain GET redirect becomes ``redirect_to_url``; anything else (a POST redirect, a native
    3-D Secure 2 fingerprint or challenge) is handed as it came to Drop-in's ``handleAction``."""
    url = action.get("url")
    if action.get("type") == "redirect" and str(action.get("method", "GET")).upper() == "GET" and isinstance(url, str):
        return NextAction("adyen", account, redirect_url=url, return_url=return_url)
    return NextAction("adyen", account, sdk={"action": dict(action)})


def _three_d_secure(body: Mapping[str, Any]) -> tuple[Authentication | None, str | None]:
    """``additionalData``'s 3-D Secure outcome (``threeDAuthenticated``, ``liabilityShift``,
    ``threeDSVersion``) and the network transaction id (``networkTxReference``)."""
    extra = body.get("additionalData")
    if not isinstance(extra, Mapping):
        return None, None
    network_transaction_id = extra.get("networkTxReference")
    ntid = network_transaction_id if isinstance(network_transaction_id, str) and network_transaction_id else None
    if "threeDAuthenticated" not in extra and "liabilityShift" not in extra:
        return None, ntid
    authenticated = str(extra.get("threeDAuthenticated", "")).lower() == "true"
    offered = str(extra.get("threeDOffered", "true")).lower() == "true"
    status = "succeeded" if authenticated else ("failed" if offered else "not_required")
    version = extra.get("threeDSVersion")
    shifted = str(extra.get("liabilityShift", "")).lower() == "true"
    return Authentication(status, str(version) if version else None, shifted), ntid


def result_from_modification(body: Mapping[str, Any]) -> GatewayResult:
    """Captures, cancels and refunds are asynchronous: ``received`` is accepted, confirmed by webhook."""
    reference = body.get("pspReference")
    if body.get("status") == "received" and isinstance(reference, str):
        return GatewayResult(Outcome.APPROVED, reference, "received")
    return GatewayResult(Outcome.UNKNOWN, code="invalid_response", message="modification not acknowledged")


def result_from_error(status: int, body: object) -> GatewayResult:
    """Map a non-2xx answer (see the module docstring for what counts as not sent)."""
    fields = body if isinstance(body, Mapping) else {}
    code = fields.get("errorCode")
    code = str(code) if code is not None else f"http_{status}"
    message = fields.get("message") if isinstance(fields.get("message"), str) else None
    if status in (401, 403, 429):
        return GatewayResult(Outcome.NOT_SENT, code=code, message=message)
    if status in (400, 404, 422) and code != IN_PROGRESS_ERROR_CODE and fields:
        if code in CARD_DATA_ERRORS:
            # The card's own data is wrong: what Stripe answers as a card_error, never retried.
            return GatewayResult(Outcome.HARD_DECLINE, code=code, decline_code=CARD_DATA_ERRORS[code], message=message)
        # Validation refused this request (its fault, not the gateway's): the breaker does not count it.
        return GatewayResult(
            Outcome.NOT_SENT, code=code, message=message, request_refused=True, param=_REFUSED_PARAMS.get(code)
        )
    return GatewayResult(Outcome.UNKNOWN, code=code, message=message)


def refused_token(message: str) -> GatewayResult:
    """A token Adyen cannot use, refused before anything was sent."""
    return GatewayResult(
        Outcome.NOT_SENT, code="invalid_token", message=message, request_refused=True, param="payment_method"
    )


def lookup_result(replay: GatewayResult, status: int | None) -> GatewayResult:
    """A replay refused by validation proves the original never ran; a refused *replay* proves nothing."""
    if replay.outcome is Outcome.NOT_SENT and status not in (400, 404, 422):
        return GatewayResult(Outcome.UNKNOWN, code=replay.code, message="lookup could not reach Adyen")
    return replay


def notification_signature(item: Mapping[str, Any], hmac_key_hex: str) -> str:
    """Adyen's HMAC: SHA-256 over the eight standard fields joined by ':', key given in hex, base64."""
    amount = item.get("amount")
    amount = amount if isinstance(amount, Mapping) else {}
    values = {**item, "value": amount.get("value", ""), "currency": amount.get("currency", "")}
    signing = ":".join(_signing_text(values.get(name)) for name in _NOTIFICATION_FIELDS)
    key = binascii.unhexlify(hmac_key_hex)
    return base64.b64encode(hmac.new(key, signing.encode(), hashlib.sha256).digest()).decode()


def verify_notification_item(item: Mapping[str, Any], hmac_key_hex: str) -> bool:
    extra = item.get("additionalData")
    given = extra.get("hmacSignature") if isinstance(extra, Mapping) else None
    if not isinstance(given, str):
        return False
    expected = notification_signature(item, hmac_key_hex)
    return hmac.compare_digest(given.encode(), expected.encode())


def single_notification_item(payload: object) -> Mapping[str, Any]:
    """The one NotificationRequestItem of a webhook body (Adyen sends one item per request)."""
    items = payload.get("notificationItems") if isinstance(payload, Mapping) else None
    if not isinstance(items, list) or len(items) != 1:
        raise ValueError("expected exactly one notification item")
    item = items[0].get("NotificationRequestItem") if isinstance(items[0], Mapping) else None
    if not isinstance(item, Mapping):
        raise ValueError("malformed notification item")
    return item


def notification_from_item(item: Mapping[str, Any]) -> GatewayNotification:
    """Reduce a verified item; Adyen has no event id, so (pspReference, eventCode, success) is the id."""
    event_code, psp = str(item.get("eventCode", "")), str(item.get("pspReference", ""))
    success = str(item.get("success", "")).lower() == "true"
    original = item.get("originalReference")
    amount = item.get("amount")
    value = amount.get("value") if isinstance(amount, Mapping) else None
    return GatewayNotification(
        event_id=f"adyen:{psp}:{event_code}:{str(success).lower()}",
        kind=_event_kind(event_code, success),
        attempt_id=str(item["merchantReference"]) if item.get("merchantReference") else None,
        reference=str(original) if original else psp,
        amount=value if isinstance(value, int) else None,
        extra={"adyen_event_code": event_code, "psp_reference": psp, "reason": str(item.get("reason", ""))},
    )


def _event_kind(event_code: str, success: bool) -> str:
    kinds = {
        "AUTHORISATION": ("payment.authorized", "payment.failed"),
        "CAPTURE": ("payment.captured", "capture.failed"),
        "CAPTURE_FAILED": ("capture.failed", "capture.failed"),
        "CANCELLATION": ("payment.canceled", "cancel.failed"),
        "REFUND": ("refund.succeeded", "refund.failed"),
        "REFUND_FAILED": ("refund.failed", "refund.failed"),
        "CHARGEBACK": ("dispute.created", "dispute.created"),
        "NOTIFICATION_OF_CHARGEBACK": ("dispute.created", "dispute.created"),
    }
    if event_code not in kinds:
        return f"unhandled.{event_code}"
    succeeded, failed = kinds[event_code]
    return succeeded if success else failed


def _signing_text(value: object) -> str:
    return "" if value is None else str(value)
