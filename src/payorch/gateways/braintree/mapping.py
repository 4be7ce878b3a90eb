"""Braintree's wire objects -> payorch's shared result types. Pure: no network, no SDK configuration.

The functions here read the objects the ``braintree`` SDK builds from Braintree's XML (``Transaction``,
``ErrorResult``, ``CreditCard``, ``WebhookNotification``) by attribute, so unit tests feed them the
SDK's own parser output and never need a server.

Decline codes are classified in :mod:`payorch.gateways.braintree.declines`; amounts convert through
:mod:`payorch.money`, which owns the currencies' exponents.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable
from decimal import InvalidOperation
from typing import Any, Final

from urllib3.exceptions import ConnectTimeoutError, SSLError

from payorch.gateways.base import Authentication, CardSummary, GatewayNotification, GatewayResult, Outcome, VaultResult
from payorch.gateways.braintree.declines import classify_gateway_rejection, classify_processor_code
from payorch.gateways.cards import card_bin, issuing_country
from payorch.gateways.transport import causes, transport_outcome
from payorch.money import UnknownCurrency, from_major_string

# --- transactions ------------------------------------------------------------------------------------

_AUTHORIZED: Final = frozenset({"authorizing", "authorized"})
CAPTURED_STATUSES: Final = frozenset(
    {"submitted_for_settlement", "settlement_pending", "settling", "settled", "settlement_confirmed"}
)
# Final states in which no money is held, found by lookup after the fact.
_RELEASED: Final = frozenset({"voided", "authorization_expired", "settlement_declined", "settlement_failed"})

_BRANDS: Final = {
    "visa": "visa",
    "mastercard": "mastercard",
    "american express": "amex",
    "discover": "discover",
    "jcb": "jcb",
    "diners club": "diners",
    "unionpay": "unionpay",
    "china unionpay": "unionpay",
    "maestro": "maestro",
}


def card_summary(card: Any) -> CardSummary | None:
    """The SDK's ``CreditCard`` (or a transaction's ``credit_card_details``) -> what payorch may keep:
    its ``bin`` and ``country_of_issuance`` (alpha-3, or ``Unknown``) too."""
    if card is None:
        return None
    card_type = getattr(card, "card_type", None)
    return CardSummary(
        brand=_BRANDS.get(str(card_type).lower(), str(card_type).lower()) if card_type else None,
        last4=getattr(card, "last_4", None) or None,
        exp_month=_int_or_none(getattr(card, "expiration_month", None)),
        exp_year=_int_or_none(getattr(card, "expiration_year", None)),
        bin=card_bin(getattr(card, "bin", None)),
        country=issuing_country(getattr(card, "country_of_issuance", None)),
    )


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def transaction_result(transaction: Any) -> GatewayResult:
    """Map one Braintree transaction, as a sale/capture/lookup answer, to a :class:`GatewayResult`.

    Raises ``AttributeError``/``ValueError`` on a transaction missing its id or status: the caller
    treats a malformed answer as ``UNKNOWN``.
    """
    status = str(transaction.status)
    reference = str(transaction.id)
    code = getattr(transaction, "processor_response_code", None) or None
    message = getattr(transaction, "processor_response_text", None) or None
    card = card_summary(getattr(transaction, "credit_card_details", None))
    if status in _AUTHORIZED or status in CAPTURED_STATUSES:
        return GatewayResult(
            Outcome.APPROVED,
            reference,
            code,
            None,
            message,
            card,
            captured=status in CAPTURED_STATUSES,
            authentication=three_d_secure(transaction),
            network_transaction_id=getattr(transaction, "network_transaction_id", None) or None,
        )
    if status == "gateway_rejected":
        reason = getattr(transaction, "gateway_rejection_reason", None)
        outcome, decline_code = classify_gateway_rejection(reason)
        return GatewayResult(
            outcome, reference, reason, decline_code, f"gateway rejected: {reason}", card,
            authentication=three_d_secure(transaction),
        )  # fmt: skip
    if status in ("processor_declined", "failed"):
        outcome, processor_decline = classify_processor_code(code)
        if outcome is Outcome.APPROVED:  # a decline status with an approval code is contradictory
            return GatewayResult(Outcome.UNKNOWN, reference, code, None, f"{status} with code {code}", card)
        return GatewayResult(outcome, reference, code, processor_decline, message, card)
    if status in _RELEASED:
        return GatewayResult(Outcome.HARD_DECLINE, reference, status, status, f"transaction {status}", card)
    return GatewayResult(Outcome.UNKNOWN, reference, status, None, f"unexpected status {status}", card)


_THREE_D_SECURE_STATUS: Final = {
    "authenticate_successful": "succeeded",
    "authenticate_attempt_successful": "attempted",
    "authenticate_successful_issuer_not_participating": "attempted",
    "authenticate_failed": "failed",
    "authenticate_rejected": "failed",
    "authenticate_unable_to_authenticate": "unavailable",
    "authentication_unavailable": "unavailable",
    "lookup_not_enrolled": "not_required",
    "lookup_bypassed": "not_required",
}


def three_d_secure(transaction: Any) -> Authentication | None:
    """The transaction's ``three_d_secure_info`` (the result the client's nonce carried), if any."""
    info = getattr(transaction, "three_d_secure_info", None)
    if info is None:
        return None
    status = str(getattr(info, "status", "") or "")
    shifted = getattr(info, "liability_shifted", None)
    version = getattr(info, "three_d_secure_version", None)
    return Authentication(
        _THREE_D_SECURE_STATUS.get(status, "unavailable"),
        str(version) if version else None,
        shifted if isinstance(shifted, bool) else str(shifted).lower() == "true",
    )


def _first_error(error_result: Any) -> tuple[str | None, str | None]:
    errors = list(error_result.errors.deep_errors)
    if not errors:
        return None, getattr(error_result, "message", None)
    return str(errors[0].code), str(errors[0].message)


_INVALID_PAYMENT_METHOD: Final = frozenset(
    {"91564", "91565", "91566", "91518", "91517", "91731", "91732", "91733", "93107", "93108", "93109"}
)
"""Validation codes about the nonce or vaulted token: unknown, expired, already used, not this merchant's."""

_INVALID_AMOUNT: Final = frozenset({"81502", "81503", "81528", "81531"})
"""Amount required, invalid format, too large, not above zero."""

_CARD_DATA_ERRORS: Final = {
    "81715": "incorrect_number",
    "81716": "incorrect_number",
    "81707": "invalid_cvc",
    "81710": "invalid_expiry_year",
    "81712": "invalid_expiry_month",
    "81713": "invalid_expiry_year",
}
"""Validation codes about the card's own data -> the decline code Stripe gives the same mistake."""


def sdk_result(result: Any) -> GatewayResult:
    """A ``SuccessfulResult``/``ErrorResult`` carrying a transaction -> :class:`GatewayResult`.

    ``None`` is what the SDK returns for a 2xx body with neither a transaction nor an error: garbage.
    A validation error without a transaction means Braintree refused the request before processing:
    nothing ran (a search by order id finds nothing), so it is NOT_SENT and the request's own fault,
    except where the card's data is wrong, which is the card's decline.
    """
    if result is None:
        return GatewayResult(Outcome.UNKNOWN, code="malformed_response", message="no transaction in answer")
    if result.is_success:
        return transaction_result(result.transaction)
    if getattr(result, "transaction", None) is not None:
        return transaction_result(result.transaction)
    code, message = _first_error(result)
    if code in _CARD_DATA_ERRORS:
        return GatewayResult(Outcome.HARD_DECLINE, code=code, decline_code=_CARD_DATA_ERRORS[code], message=message)
    param = "payment_method" if code in _INVALID_PAYMENT_METHOD else "amount" if code in _INVALID_AMOUNT else None
    return GatewayResult(Outcome.NOT_SENT, code=code, message=message, request_refused=True, param=param)


def capture_result(result: Any) -> GatewayResult:
    """``submit_for_settlement``'s answer; a refusal (wrong state, amount too large) is a hard decline."""
    if result is None or result.is_success:
        return sdk_result(result)
    return _refusal(result)


def void_result(result: Any) -> GatewayResult:
    """``void``'s answer: the transaction comes back ``voided``."""
    if result is None:
        return sdk_result(result)
    if result.is_success:
        transaction = result.transaction
        if str(transaction.status) != "voided":
            return GatewayResult(Outcome.UNKNOWN, str(transaction.id), str(transaction.status), message="not voided")
        return GatewayResult(Outcome.APPROVED, str(transaction.id), "voided")
    return _refusal(result)


def refund_result(result: Any) -> GatewayResult:
    """``refund``'s answer: the result's reference is the refund (credit) transaction's id."""
    if result is None:
        return sdk_result(result)
    if result.is_success:
        refund = result.transaction
        return GatewayResult(Outcome.APPROVED, str(refund.id), str(refund.status))
    if getattr(result, "transaction", None) is not None:
        return transaction_result(result.transaction)
    return _refusal(result)


def _refusal(error_result: Any) -> GatewayResult:
    code, message = _first_error(error_result)
    return GatewayResult(Outcome.HARD_DECLINE, code=code, decline_code="invalid_request", message=message)


def lookup_result(transactions: Iterable[Any]) -> GatewayResult:
    """The sales found under one order id -> what became of the attempt.

    No sale at all is ``NOT_SENT``. Should there ever be several, any that holds money wins: saying
    "not charged" while one is would risk a second charge elsewhere.
    """
    results = [transaction_result(t) for t in transactions if getattr(t, "type", "sale") == "sale"]
    if not results:
        return GatewayResult(Outcome.NOT_SENT, message="no transaction with this order id")
    for outcome in (Outcome.APPROVED, Outcome.UNKNOWN):
        for result in results:
            if result.outcome is outcome:
                return result
    return results[0]


def vault_result(result: Any) -> VaultResult:
    """``payment_method.create``'s answer -> :class:`VaultResult`."""
    if result is None:
        return VaultResult(Outcome.UNKNOWN, code="malformed_response", message="no payment method in answer")
    if result.is_success:
        method = result.payment_method
        return VaultResult(Outcome.APPROVED, token=str(method.token), card=card_summary(method))
    verification = getattr(result, "credit_card_verification", None)
    if verification is not None:
        return _verification_result(verification)
    code, message = _first_error(result)
    return VaultResult(Outcome.HARD_DECLINE, code=code, message=message)


def _verification_result(verification: Any) -> VaultResult:
    # A card verification the processor (or Braintree's rules) refused while vaulting.
    code = getattr(verification, "processor_response_code", None)
    if getattr(verification, "status", None) == "gateway_rejected":
        reason = getattr(verification, "gateway_rejection_reason", None)
        outcome, _ = classify_gateway_rejection(reason)
        return VaultResult(outcome, code=reason, message=f"gateway rejected: {reason}")
    outcome, _ = classify_processor_code(code)
    if outcome is Outcome.APPROVED:  # refused with an approval code: contradictory
        outcome = Outcome.UNKNOWN
    return VaultResult(outcome, code=code, message=getattr(verification, "processor_response_text", None))


# --- network failures --------------------------------------------------------------------------------

# Status-code exceptions the SDK raises, by class name: a 503 or 429 states that nothing ran; 401/403/
# 404/426 are refusals before any processing. Everything else (500, 504, 408, unexpected) may have run.
_NOT_SENT_ERRORS: Final = frozenset(
    {
        "ServiceUnavailableError",
        "TooManyRequestsError",
        "AuthenticationError",
        "AuthorizationError",
        "NotFoundError",
        "UpgradeRequiredError",
    }
)


_URLLIB3_BEFORE_WRITING: Final[tuple[type[BaseException], ...]] = (
    ConnectTimeoutError,
    SSLError,
    ConnectionRefusedError,
)
"""The SDK's transport (requests over urllib3) raises these before a byte of the request is written:
urllib3's ``NewConnectionError`` and ``NameResolutionError`` are ``ConnectTimeoutError`` subclasses."""


def failure_outcome(exc: BaseException) -> tuple[Outcome, str]:
    """An exception out of the SDK -> (outcome, short code) saying whether the request may have run.

    Only failures that happen before a byte of the request leaves us are ``NOT_SENT``: connection
    refused, DNS, connect timeout, TLS handshake, wrapped at any depth by the SDK, or a status that
    says so.
    """
    name = type(exc).__name__
    if name in _NOT_SENT_ERRORS:
        return Outcome.NOT_SENT, _snake(name)
    if any(transport_outcome(cause, _URLLIB3_BEFORE_WRITING) is Outcome.NOT_SENT for cause in causes(exc)):
        return Outcome.NOT_SENT, "connect_failed"
    for cause in causes(exc):
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
            return Outcome.UNKNOWN, "timeout"
    if isinstance(exc, KeyError | AttributeError | TypeError | ValueError | InvalidOperation) or (name == "ExpatError"):
        return Outcome.UNKNOWN, "malformed_response"
    return Outcome.UNKNOWN, _snake(name)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


# --- webhooks ----------------------------------------------------------------------------------------

_NOTIFICATION_KINDS: Final = {
    "transaction_settled": "payment.succeeded",
    "transaction_settlement_declined": "payment.failed",
    "transaction_disbursed": "payment.disbursed",
    "refund_failed": "refund.failed",
    "dispute_opened": "dispute.created",
    "dispute_lost": "dispute.lost",
    "dispute_won": "dispute.won",
    "check": "check",
}


def notification(parsed: Any, payload: str) -> GatewayNotification:
    """A verified ``WebhookNotification`` -> :class:`GatewayNotification`.

    Braintree notifications carry no id of their own; the payload's SHA-256 is stable across
    redeliveries of the same notification, which is what deduplication needs.
    """
    kind = str(parsed.kind)
    event_id = "bt_" + hashlib.sha256(payload.encode()).hexdigest()
    extra = {"braintree_kind": kind}
    transaction = getattr(parsed, "transaction", None)
    if transaction is None:
        dispute = getattr(parsed, "dispute", None)
        if dispute is not None:
            extra["dispute_id"] = str(dispute.id)
            transaction = getattr(dispute, "transaction", None)
    attempt_id = reference = None
    amount = None
    if transaction is not None:
        attempt_id, reference, amount = _transaction_fields(transaction)
        extra["status"] = str(_field(transaction, "status") or "")
    return GatewayNotification(
        event_id=event_id,
        kind=_NOTIFICATION_KINDS.get(kind, f"braintree.{kind}"),
        attempt_id=attempt_id,
        reference=reference,
        amount=amount,
        extra=extra,
    )


def _field(source: Any, name: str) -> Any:
    # A dispute's transaction is a plain dict; a notification's is a Transaction object.
    if isinstance(source, dict):
        return source.get(name)
    return getattr(source, name, None)


def _transaction_fields(transaction: Any) -> tuple[str | None, str | None, int | None]:
    order_id = _field(transaction, "order_id")
    reference = _field(transaction, "id")
    raw_amount = _field(transaction, "amount")
    currency = _field(transaction, "currency_iso_code")
    amount = _minor_units(str(raw_amount), str(currency)) if raw_amount is not None and currency else None
    return (
        str(order_id) if order_id else None,
        str(reference) if reference else None,
        amount,
    )


def _minor_units(amount: str, currency: str) -> int | None:
    # A currency payorch does not know: the notification still counts, without an amount.
    with contextlib.suppress(UnknownCurrency):
        return from_major_string(amount, currency)
    return None
