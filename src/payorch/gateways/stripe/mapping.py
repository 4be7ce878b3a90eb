"""Pure translation between Stripe's wire objects and payorch's gateway results.

Nothing here does I/O: every function takes what Stripe sent (a PaymentIntent, a refund, an error's
status, headers and JSON body, a webhook event) and says what it means for money having moved.

Which answers count as NOT_SENT (provably never executed), and why:

- a transport error raised before the request was written: connection refused, DNS failure,
  connect timeout, TLS handshake failure, pool timeout
  (:func:`payorch.gateways.transport.transport_outcome`);
- HTTP 429: Stripe's rate limiter answers before any endpoint runs;
- HTTP 503 carrying ``Stripe-Should-Retry: true``: Stripe's statement that nothing was executed and
  that the same request may be sent again;
- HTTP 409 ``lock_timeout``: the object was locked by another request, this one never ran;
- HTTP 400/401/403/404 other than ``idempotency_error``: refused before executing (Stripe stores no
  idempotent result for these, so a replay would execute afresh).

Everything else that is not a clear answer is UNKNOWN: read timeouts, resets after sending, any 5xx
without that header, 409 ``idempotency_key_in_use`` (the first request is still running), 400
``idempotency_error``, a 2xx that is not JSON or lacks ``id``/``status``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, cast

import stripe
from stripe.params import PaymentIntentCreateParams

from payorch.gateways.base import (
    Authentication,
    CardSummary,
    GatewayNotification,
    GatewayResult,
    NextAction,
    Outcome,
    PaymentRequest,
)
from payorch.gateways.cards import issuing_country
from payorch.gateways.transport import transport_outcome

HARD_DECLINE_CODES = frozenset(
    {
        "authentication_not_handled",
        "call_issuer",
        "card_declined",
        "card_not_supported",
        "card_velocity_exceeded",
        "currency_not_supported",
        "do_not_honor",
        "do_not_try_again",
        "duplicate_transaction",
        "expired_card",
        "fraudulent",
        "generic_decline",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_pin",
        "incorrect_zip",
        "invalid_account",
        "invalid_amount",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "invalid_pin",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "no_action_taken",
        "not_permitted",
        "pickup_card",
        "pin_try_exceeded",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
        "withdrawal_count_limit_exceeded",
        "insufficient_funds",
    }
)
"""Declines the customer's card gave for good (Stripe's decline codes whose advice is not to retry)."""

SOFT_DECLINE_CODES = frozenset(
    {
        "approve_with_id",
        "authentication_required",
        "issuer_not_available",
        "offline_pin_required",
        "online_or_offline_pin_required",
        "processing_error",
        "reenter_transaction",
        "try_again_later",
    }
)
"""Declines that may succeed when tried again later (or elsewhere, if configured cascadable)."""


EXPAND = ["payment_method", "latest_charge"]
"""The card summary, and the charge's 3-D Secure result and network transaction id."""


def payment_intent_params(
    request: PaymentRequest, request_three_d_secure: str = "automatic"
) -> PaymentIntentCreateParams:
    """The create-and-confirm parameters; identical for a first try and for its replay in lookup.

    With a ``return_url`` a 3-D Secure challenge answers ``next_action.redirect_to_url``; without
    one, Stripe.js completes it (``handleNextAction`` with the client secret), so no redirect-based
    payment method is allowed.
    """
    presence = request.presence
    params: dict[str, Any] = {
        "amount": request.amount,
        "currency": request.currency.lower(),
        "confirm": True,
        "capture_method": "automatic" if request.capture else "manual",
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": {
            "merchant_id": request.merchant_id,
            "charge_id": request.charge_id,
            "attempt_id": request.attempt_id,
        },
        "expand": EXPAND,
    }
    if presence.return_url is not None:
        params["return_url"] = presence.return_url
        params["automatic_payment_methods"] = {"enabled": True}
    wanted = "challenge" if presence.request_authentication else request_three_d_secure
    if wanted != "automatic":
        params["payment_method_options"] = {"card": {"request_three_d_secure": wanted}}
    if presence.setup_future_usage:
        params["setup_future_usage"] = "off_session"
    if presence.off_session:
        params["off_session"] = True
    if request.token.startswith("tok_"):
        params["payment_method_data"] = {"type": "card", "card": {"token": request.token}}
    else:
        params["payment_method"] = request.token
    if request.description:
        params["description"] = request.description
    # cast: the SDK's TypedDict omits payment_method_data[card][token], which the API accepts.
    return cast(PaymentIntentCreateParams, params)


def decline_outcome(code: str | None) -> Outcome:
    """Hard unless Stripe's advice for the code is to try again; unknown codes are hard (never retried)."""
    return Outcome.SOFT_DECLINE if code in SOFT_DECLINE_CODES else Outcome.HARD_DECLINE


def card_summary(payment_method: object) -> CardSummary | None:
    """Brand, last4, expiry and issuing country from an expanded PaymentMethod (an id alone tells
    us nothing). Stripe does not tell a PaymentMethod's BIN."""
    if not isinstance(payment_method, Mapping):
        return None
    card = payment_method.get("card")
    if not isinstance(card, Mapping):
        return None
    return CardSummary(
        brand=_str_or_none(card.get("brand")),
        last4=_str_or_none(card.get("last4")),
        exp_month=_int_or_none(card.get("exp_month")),
        exp_year=_int_or_none(card.get("exp_year")),
        country=issuing_country(card.get("country")),
    )


def result_from_payment_intent(intent: Mapping[str, Any], account: str = "stripe") -> GatewayResult:
    """Map a PaymentIntent's status; the same mapping serves create, capture, cancel, retrieve and
    search. ``account``: the configured gateway a ``next_action`` names."""
    intent_id, status = intent.get("id"), intent.get("status")
    if not isinstance(intent_id, str) or not isinstance(status, str):
        return GatewayResult(Outcome.UNKNOWN, code="invalid_response", message="PaymentIntent lacks id/status")
    card = card_summary(intent.get("payment_method"))
    authentication, network_transaction_id = charge_details(intent.get("latest_charge"))
    match status:
        case "succeeded":
            return GatewayResult(
                Outcome.APPROVED,
                intent_id,
                status,
                card=card,
                captured=True,
                authentication=authentication,
                network_transaction_id=network_transaction_id,
            )
        case "requires_capture" | "canceled":
            # canceled is what a void asks for; on a lookup it means an authorization that was released.
            return GatewayResult(
                Outcome.APPROVED,
                intent_id,
                status,
                card=card,
                authentication=authentication,
                network_transaction_id=network_transaction_id,
            )
        case "requires_action":
            action = next_action(intent, account)
            if action is not None:
                return GatewayResult(
                    Outcome.ACTION_REQUIRED,
                    intent_id,
                    status,
                    message="the customer must authenticate",
                    card=card,
                    next_action=action,
                    authentication=Authentication("required"),
                )
            # Nothing a customer could follow: no money will move.
            return GatewayResult(
                Outcome.SOFT_DECLINE,
                intent_id,
                status,
                "authentication_required",
                "card requires authentication",
                card,
            )
        case "requires_payment_method" if isinstance(intent.get("last_payment_error"), Mapping):
            return _declined(intent["last_payment_error"], intent_id, card, authentication)
    return GatewayResult(Outcome.UNKNOWN, intent_id, status, message=f"PaymentIntent is {status}", card=card)


def next_action(intent: Mapping[str, Any], account: str) -> NextAction | None:
    """The PaymentIntent's ``next_action`` as the frontend follows it: a redirect Stripe gave (with
    a ``return_url``), else the client secret for Stripe.js ``handleNextAction``."""
    action = intent.get("next_action")
    redirect = action.get("redirect_to_url") if isinstance(action, Mapping) else None
    if isinstance(redirect, Mapping) and isinstance(redirect.get("url"), str):
        return NextAction(
            "stripe", account, redirect_url=redirect["url"], return_url=_str_or_none(redirect.get("return_url"))
        )
    secret = _str_or_none(intent.get("client_secret"))
    if secret is None:
        return None
    return NextAction("stripe", account, sdk={"client_secret": secret})


_THREE_D_SECURE_STATUS = {
    "authenticated": ("succeeded", True),
    "attempt_acknowledged": ("attempted", True),
    "exempted": ("not_required", False),
    "failed": ("failed", False),
    "not_supported": ("unavailable", False),
    "processing_error": ("unavailable", False),
}


def charge_details(charge: object) -> tuple[Authentication | None, str | None]:
    """The 3-D Secure outcome and network transaction id of an expanded ``latest_charge``."""
    details = charge.get("payment_method_details") if isinstance(charge, Mapping) else None
    card = details.get("card") if isinstance(details, Mapping) else None
    if not isinstance(card, Mapping):
        return None, None
    secure = card.get("three_d_secure")
    authentication = None
    if isinstance(secure, Mapping):
        status, shifted = _THREE_D_SECURE_STATUS.get(str(secure.get("result")), ("unavailable", False))
        authentication = Authentication(status, _str_or_none(secure.get("version")), shifted)
    return authentication, _str_or_none(card.get("network_transaction_id"))


def result_from_refund(refund: Mapping[str, Any]) -> GatewayResult:
    """A refund Stripe accepted (succeeded, or pending at the bank) is APPROVED; ``reference`` is re_..."""
    refund_id, status = refund.get("id"), refund.get("status")
    if not isinstance(refund_id, str) or not isinstance(status, str):
        return GatewayResult(Outcome.UNKNOWN, code="invalid_response", message="refund without id/status")
    if status in ("succeeded", "pending"):
        return GatewayResult(Outcome.APPROVED, refund_id, status)
    if status in ("failed", "canceled"):
        reason = _str_or_none(refund.get("failure_reason"))
        return GatewayResult(Outcome.HARD_DECLINE, refund_id, status, reason)
    return GatewayResult(Outcome.UNKNOWN, refund_id, status)


def result_from_error(error: stripe.StripeError, account: str = "stripe") -> GatewayResult:
    """Map any SDK error: connection errors by their cause, API errors by status, headers and body."""
    if isinstance(error, stripe.APIConnectionError):
        outcome = transport_outcome(error.__cause__)
        cause = type(error.__cause__).__name__ if error.__cause__ else "network_error"
        return GatewayResult(outcome, code=cause, message="network error talking to Stripe")
    return result_from_error_response(error.http_status, error.headers or {}, error.json_body, account)


def result_from_error_response(
    status: int | None, headers: Mapping[str, str], body: object, account: str = "stripe"
) -> GatewayResult:
    """Map a non-2xx answer (or a 2xx Stripe's SDK could not parse)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return GatewayResult(Outcome.UNKNOWN, code=f"http_{status}", message="unparseable answer from Stripe")
    code, message = _str_or_none(error.get("code")), _str_or_none(error.get("message"))
    error_type = error.get("type")
    if status == 402 or error_type == "card_error":
        intent = error.get("payment_intent")
        reference = intent.get("id") if isinstance(intent, Mapping) else None
        card = card_summary(intent.get("payment_method")) if isinstance(intent, Mapping) else None
        if code == "authentication_required" and isinstance(intent, Mapping):
            # Off-session and the issuer wants the customer: the PaymentIntent waits for them to
            # confirm it on session (Stripe.js, with its client secret).
            action = next_action({"client_secret": intent.get("client_secret")}, account)
            if reference is not None and action is not None:
                return GatewayResult(
                    Outcome.ACTION_REQUIRED, reference, code, code, message, card, next_action=action,
                    authentication=Authentication("required"),
                )  # fmt: skip
        return _declined(error, reference, card)
    if status == 429 or (status == 503 and _header(headers, "stripe-should-retry") == "true"):
        return GatewayResult(Outcome.NOT_SENT, code=code or f"http_{status}", message=message)
    if status == 409 and code == "lock_timeout":
        return GatewayResult(Outcome.NOT_SENT, code=code, message=message)
    if status in (400, 401, 403, 404) and error_type != "idempotency_error":
        refused = status in (400, 404)  # this request's fault (a bad token), not the gateway's
        return GatewayResult(
            Outcome.NOT_SENT,
            code=code or str(error_type),
            message=message,
            request_refused=refused,
            param=refused_param(error) if refused else None,
        )
    return GatewayResult(Outcome.UNKNOWN, code=code or str(error_type or f"http_{status}"), message=message)


# Stripe's names for what payorch calls ``payment_method`` (a charge's token, a vault's token).
_TOKEN_PARAMS = frozenset({"payment_method", "payment_method_data[card][token]", "card[token]", "source", "token"})
_TOKEN_CODES = frozenset(
    {
        "token_already_used",
        "token_in_use",
        "payment_method_unactivated",
        "payment_method_unexpected_state",
        "payment_method_invalid_parameter",
        "payment_method_not_available",
    }
)
_OWN_PARAMS = frozenset({"amount", "currency", "description"})


def refused_param(error: Mapping[str, Any]) -> str | None:
    """The payorch field a refused request's error is about, in payorch's names; None if it names none."""
    param, code = _str_or_none(error.get("param")), _str_or_none(error.get("code"))
    if param in _TOKEN_PARAMS or code in _TOKEN_CODES:
        return "payment_method"
    return param if param in _OWN_PARAMS else None


def lookup_result(replay: GatewayResult, status: int | None) -> GatewayResult:
    """What a replayed create says about the original attempt.

    A stored answer (approved, declined, 5xx) is the original's. A 400/404 refusal means Stripe kept
    no result under the key, so the original never executed: NOT_SENT. Any other "not sent" (429,
    503, refused connection) only says the *replay* did not run, which proves nothing: UNKNOWN.
    """
    if replay.outcome is Outcome.NOT_SENT and status not in (400, 404):
        return GatewayResult(Outcome.UNKNOWN, code=replay.code, message="lookup could not reach Stripe")
    return replay


def notification_from_event(event: Mapping[str, Any]) -> GatewayNotification:
    """Reduce a verified Stripe event to what the state machine needs."""
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not isinstance(obj, Mapping):
        raise ValueError("not a Stripe event")
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping):
        metadata = {}
    is_intent = obj.get("object") == "payment_intent"
    reference = obj.get("id") if is_intent else obj.get("payment_intent")
    amount = obj.get("amount_received") if event_type == "payment_intent.succeeded" else obj.get("amount")
    return GatewayNotification(
        event_id=event_id,
        kind=_EVENT_KINDS.get(event_type, f"unhandled.{event_type}"),
        attempt_id=_str_or_none(metadata.get("attempt_id")),
        reference=_str_or_none(reference),
        amount=_int_or_none(amount),
        extra={"stripe_type": event_type, "object_id": str(obj.get("id", ""))},
    )


_EVENT_KINDS = {
    "payment_intent.amount_capturable_updated": "payment.authorized",
    "payment_intent.succeeded": "payment.succeeded",
    "payment_intent.payment_failed": "payment.failed",
    "payment_intent.canceled": "payment.canceled",
    "refund.created": "refund.created",
    "refund.updated": "refund.updated",
    "refund.failed": "refund.failed",
    "charge.refunded": "refund.succeeded",
    "charge.dispute.created": "dispute.created",
}


def parse_event_body(body: bytes) -> Mapping[str, Any]:
    event = json.loads(body)
    if not isinstance(event, Mapping):
        raise ValueError("event body is not an object")
    return event


def _declined(
    error: Mapping[str, Any],
    reference: str | None,
    card: CardSummary | None,
    authentication: Authentication | None = None,
) -> GatewayResult:
    code = _str_or_none(error.get("code"))
    decline_code = _str_or_none(error.get("decline_code")) or code or "card_declined"
    if decline_code == "generic_decline":
        decline_code = "card_declined"
    if code == "payment_intent_authentication_failure":
        # The customer failed (or abandoned) the challenge: final for this payment.
        decline_code = "authentication_failed"
        authentication = authentication or Authentication("failed", liability_shifted=False)
    return GatewayResult(
        decline_outcome(decline_code),
        reference,
        code,
        decline_code,
        _str_or_none(error.get("message")),
        card,
        authentication=authentication,
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value.strip().lower()
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
