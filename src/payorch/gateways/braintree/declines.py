"""Braintree's decline codes -> payorch's outcomes. Pure: tables and two lookups.

Classification follows Braintree's documented processor responses (hard vs soft), with two
deliberate overrides where payorch's policy (DESIGN.md section 5) is stricter than "may succeed on a
later retry": insufficient funds (2001) and duplicate transaction (2016) are hard, because retrying
either at another gateway cannot help and, for a duplicate, could charge the customer twice.
"""

from __future__ import annotations

from typing import Final

from payorch.gateways.base import Outcome

_HARD: Final = True
_SOFT: Final = False

# code -> (hard?, normalised decline code). Hard/soft as Braintree documents them unless noted.
_PROCESSOR_DECLINES: Final[dict[int, tuple[bool, str]]] = {
    2000: (_SOFT, "do_not_honor"),
    2001: (_HARD, "insufficient_funds"),  # Braintree: soft. payorch: the card said no (DESIGN.md 5)
    2002: (_SOFT, "card_velocity_exceeded"),
    2003: (_SOFT, "card_velocity_exceeded"),
    2004: (_HARD, "expired_card"),
    2005: (_HARD, "incorrect_number"),
    2006: (_HARD, "invalid_expiry_year"),
    2007: (_HARD, "invalid_account"),
    2008: (_HARD, "incorrect_number"),
    2009: (_HARD, "invalid_account"),
    2010: (_HARD, "incorrect_cvc"),
    2011: (_HARD, "call_issuer"),
    2012: (_HARD, "lost_card"),
    2013: (_HARD, "stolen_card"),
    2014: (_HARD, "fraudulent"),
    2015: (_HARD, "transaction_not_allowed"),
    2016: (_HARD, "duplicate_transaction"),  # Braintree: soft. A sibling went through: never retry
    2017: (_HARD, "stop_payment_order"),
    2018: (_HARD, "stop_payment_order"),
    2019: (_HARD, "card_declined"),
    2020: (_HARD, "security_violation"),
    2021: (_HARD, "security_violation"),
    2022: (_HARD, "card_declined"),
    2023: (_HARD, "card_not_supported"),
    2024: (_HARD, "card_not_supported"),
    2025: (_SOFT, "processing_error"),
    2026: (_SOFT, "processing_error"),
    2027: (_HARD, "invalid_amount"),
    2028: (_HARD, "processing_error"),
    2029: (_HARD, "processing_error"),
    2030: (_HARD, "processing_error"),
    2031: (_HARD, "processing_error"),
    2032: (_HARD, "transaction_not_allowed"),
    2033: (_HARD, "card_declined"),
    2034: (_SOFT, "generic_decline"),
    2035: (_SOFT, "card_declined"),
    2036: (_HARD, "processing_error"),
    2037: (_HARD, "processing_error"),
    2038: (_SOFT, "generic_decline"),
    2039: (_HARD, "card_declined"),
    2040: (_SOFT, "processing_error"),
    2041: (_HARD, "call_issuer"),
    2042: (_SOFT, "processing_error"),
    2043: (_HARD, "do_not_try_again"),
    2044: (_HARD, "call_issuer"),
    2045: (_HARD, "processing_error"),
    2046: (_SOFT, "generic_decline"),
    2047: (_HARD, "pickup_card"),
    2048: (_SOFT, "invalid_amount"),
    2053: (_HARD, "lost_card"),
    2057: (_SOFT, "restricted_card"),
    2059: (_HARD, "incorrect_zip"),
    2060: (_HARD, "incorrect_cvc"),
    2064: (_HARD, "currency_not_supported"),
    2067: (_HARD, "authorization_expired"),
    2099: (_HARD, "authentication_required"),
    3000: (_SOFT, "try_again_later"),  # processor network unavailable: nothing was charged
}

_GATEWAY_REJECTIONS: Final[dict[str, tuple[bool, str]]] = {
    "avs": (_HARD, "incorrect_zip"),
    "cvv": (_HARD, "incorrect_cvc"),
    "avs_and_cvv": (_HARD, "incorrect_cvc"),
    "fraud": (_HARD, "fraudulent"),
    "risk_threshold": (_HARD, "fraudulent"),
    "duplicate": (_HARD, "duplicate_transaction"),
    "three_d_secure": (_HARD, "authentication_required"),
    "excessive_retry": (_HARD, "do_not_try_again"),
    # Merchant-side setup problems, not the card's fault: an operator may cascade these.
    "token_issuance": (_SOFT, "processing_error"),
    "application_incomplete": (_SOFT, "processing_error"),
}

# Unknown decline codes are hard: never retry what we do not understand.
_UNKNOWN_DECLINE: Final = (_HARD, "card_declined")


def _decline_outcome(hard: bool) -> Outcome:
    return Outcome.HARD_DECLINE if hard else Outcome.SOFT_DECLINE


def classify_processor_code(code: str | None) -> tuple[Outcome, str | None]:
    """A processor response code -> (outcome, normalised decline code); approvals carry no decline code."""
    try:
        number = int(code or "")
    except ValueError:
        return _decline_outcome(_UNKNOWN_DECLINE[0]), _UNKNOWN_DECLINE[1]
    if 1000 <= number < 2000:
        return Outcome.APPROVED, None
    hard, decline_code = _PROCESSOR_DECLINES.get(number, _UNKNOWN_DECLINE)
    return _decline_outcome(hard), decline_code


def classify_gateway_rejection(reason: str | None) -> tuple[Outcome, str]:
    """A ``gateway_rejection_reason`` -> (outcome, normalised decline code)."""
    hard, decline_code = _GATEWAY_REJECTIONS.get(reason or "", _UNKNOWN_DECLINE)
    return _decline_outcome(hard), decline_code
