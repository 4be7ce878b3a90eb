"""The charge and attempt state machines. Every status change goes through :func:`transition`.

pending ──► authorized ──► succeeded (capture)
   │  ╲          └──────► canceled  (void)
   │   ╲► succeeded
   │    ╲► failed
   ├──► processing ──► authorized | succeeded | failed   (outcome learnt later)
   └──► requires_action ──► succeeded | authorized | failed | canceled   (customer authentication;
                                                                          canceled when abandoned)
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ChargeStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    REQUIRES_ACTION = "requires_action"
    """The customer must authenticate (3-D Secure) at the gateway the charge is bound to."""
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class AttemptStatus(StrEnum):
    PENDING = "pending"
    """Written before the gateway is called: a crash leaves it visible to the reconciler."""
    APPROVED = "approved"
    DECLINED = "declined"
    NOT_SENT = "not_sent"
    UNKNOWN = "unknown"
    REQUIRES_ACTION = "requires_action"
    """The gateway holds the payment open for the customer's authentication; looked up at its expiry."""
    REVERSED = "reversed"
    """A late success that was not the charge's winner, voided or refunded by the reconciler."""
    REVIEW = "review"
    """Still unknown after every scheduled lookup: an operator decides."""


CHARGE_TRANSITIONS: Final[dict[ChargeStatus, frozenset[ChargeStatus]]] = {
    ChargeStatus.PENDING: frozenset(
        {
            ChargeStatus.PROCESSING,
            ChargeStatus.REQUIRES_ACTION,
            ChargeStatus.AUTHORIZED,
            ChargeStatus.SUCCEEDED,
            ChargeStatus.FAILED,
        }
    ),
    ChargeStatus.REQUIRES_ACTION: frozenset(
        {ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED, ChargeStatus.FAILED, ChargeStatus.CANCELED}
    ),
    ChargeStatus.PROCESSING: frozenset({ChargeStatus.AUTHORIZED, ChargeStatus.SUCCEEDED, ChargeStatus.FAILED}),
    ChargeStatus.AUTHORIZED: frozenset({ChargeStatus.SUCCEEDED, ChargeStatus.CANCELED}),
    ChargeStatus.SUCCEEDED: frozenset(),
    ChargeStatus.FAILED: frozenset(),
    ChargeStatus.CANCELED: frozenset(),
}

ATTEMPT_TRANSITIONS: Final[dict[AttemptStatus, frozenset[AttemptStatus]]] = {
    AttemptStatus.PENDING: frozenset(
        {
            AttemptStatus.APPROVED,
            AttemptStatus.DECLINED,
            AttemptStatus.NOT_SENT,
            AttemptStatus.UNKNOWN,
            AttemptStatus.REQUIRES_ACTION,
        }
    ),
    AttemptStatus.REQUIRES_ACTION: frozenset({AttemptStatus.APPROVED, AttemptStatus.DECLINED}),
    AttemptStatus.UNKNOWN: frozenset(
        {AttemptStatus.APPROVED, AttemptStatus.DECLINED, AttemptStatus.NOT_SENT, AttemptStatus.REVIEW}
    ),
    AttemptStatus.REVIEW: frozenset({AttemptStatus.APPROVED, AttemptStatus.DECLINED, AttemptStatus.NOT_SENT}),
    AttemptStatus.APPROVED: frozenset({AttemptStatus.REVERSED}),
    AttemptStatus.DECLINED: frozenset(),
    AttemptStatus.NOT_SENT: frozenset(),
    AttemptStatus.REVERSED: frozenset(),
}

FINAL_CHARGE_STATUSES: Final = frozenset(
    {ChargeStatus.AUTHORIZED, ChargeStatus.SUCCEEDED, ChargeStatus.FAILED, ChargeStatus.CANCELED}
)
UNRESOLVED_ATTEMPT_STATUSES: Final = frozenset({AttemptStatus.PENDING, AttemptStatus.UNKNOWN})


class InvalidTransition(Exception):
    def __init__(self, kind: str, current: str, target: str) -> None:
        super().__init__(f"{kind} cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: ChargeStatus, target: ChargeStatus) -> bool:
    return target in CHARGE_TRANSITIONS[current]


def transition(current: ChargeStatus, target: ChargeStatus) -> ChargeStatus:
    """Return ``target`` if the charge may move there from ``current``; raise otherwise."""
    if target not in CHARGE_TRANSITIONS[current]:
        raise InvalidTransition("charge", current, target)
    return target


def transition_attempt(current: AttemptStatus, target: AttemptStatus) -> AttemptStatus:
    if target not in ATTEMPT_TRANSITIONS[current]:
        raise InvalidTransition("attempt", current, target)
    return target
