"""The charge lifecycle: the only owner of outcome -> state -> reply for charges and their attempts.

The request path (``charge_create``), the reconciler (``charge_recovery``) and inbound gateway
notifications all call it, so a charge ends the same way however its outcome was learnt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from payorch.audit import trail
from payorch.audit.events import Actor, AuditEvent, Origin, outbox_params
from payorch.errors import ApiError, AuthenticationRequired, CardDeclined, InvalidRequest, NoGatewayAvailable
from payorch.gateways.base import CustomerPresence, GatewayResult, Outcome
from payorch.orchestration.executor import AttemptOutcome, ChargeJob
from payorch.payments import refusals
from payorch.payments.operations import Reply, error_reply, reply
from payorch.payments.schemas import render_charge
from payorch.payments.states import FINAL_CHARGE_STATUSES, AttemptStatus, ChargeStatus, transition
from payorch.storage import charge_writes
from payorch.storage import payment_methods as payment_methods_repo
from payorch.storage.charges import AttemptResult, Charge
from payorch.storage.sql import Connection

ATTEMPT_STATUS_BY_OUTCOME = {
    Outcome.APPROVED: AttemptStatus.APPROVED,
    Outcome.HARD_DECLINE: AttemptStatus.DECLINED,
    Outcome.SOFT_DECLINE: AttemptStatus.DECLINED,
    Outcome.NOT_SENT: AttemptStatus.NOT_SENT,
    Outcome.UNKNOWN: AttemptStatus.UNKNOWN,
    Outcome.ACTION_REQUIRED: AttemptStatus.REQUIRES_ACTION,
}

REQUIRES_ACTION_STATUS = 202
"""A charge waiting for its customer is neither created-and-done (201) nor declined (402): 202, like
``processing``, says "not final yet", and the body's ``status`` and ``next_action`` say what to do
(docs/authentication.md)."""


_REQUIRED = {"status": "required", "version": None, "liability_shifted": None}


UNAVAILABLE = "gateway_unavailable"
"""A failed charge's ``failure_code`` when no gateway could be reached (or one did not say): 503."""
PAYMENT_METHOD_REJECTED = "token_rejected"
"""... when every candidate gateway refused the payment method as invalid (unknown, used, not its own): 400."""
REQUEST_REFUSED = "parameter_invalid"
"""... when every candidate gateway refused the request as invalid for another reason: 400."""
_REFUSAL_PARAMS = {PAYMENT_METHOD_REJECTED: "payment_method", REQUEST_REFUSED: None}


def reply_for(charge: Charge, request_id: str) -> Reply:
    """The answer a charge in its current state gets (DESIGN.md section 4)."""
    status = ChargeStatus(charge.status)
    if status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED, ChargeStatus.CANCELED):
        return reply(201, render_charge(charge))
    if status in (ChargeStatus.PENDING, ChargeStatus.PROCESSING):
        return reply(202, render_charge(charge))
    error: ApiError
    if status is ChargeStatus.REQUIRES_ACTION:
        if not charge.off_session:
            return reply(REQUIRES_ACTION_STATUS, render_charge(charge))
        error = AuthenticationRequired(
            "The issuer requires the customer to authenticate this charge; send them to its next_action.",
            charge=charge.id,
            next_action=charge.next_action,
        )
        return error_reply(error, request_id)
    if charge.failure_code == UNAVAILABLE:
        error = NoGatewayAvailable(charge.failure_message or "No gateway could take the charge.", charge=charge.id)
    elif charge.failure_code in _REFUSAL_PARAMS:
        message = charge.failure_message or "Every gateway refused the request."
        error = InvalidRequest(
            message, code=charge.failure_code, param=_REFUSAL_PARAMS[charge.failure_code], charge=charge.id
        )
    else:
        error = CardDeclined(
            charge.failure_message or "The card was declined.", decline_code=charge.decline_code, charge=charge.id
        )
    return error_reply(error, request_id)


def job_for(charge: Charge) -> ChargeJob:
    """What the gateways are asked for this charge (each attempt adds its id and token)."""
    passed = charge.customer_presence or {}
    presence = CustomerPresence(
        return_url=charge.return_url,
        browser_info=passed.get("browser_info"),
        authentication_data=passed.get("authentication_data"),
        setup_future_usage=charge.setup_future_usage == "off_session",
        off_session=charge.off_session,
    )
    return ChargeJob(
        charge.merchant_id,
        charge.id,
        charge.amount,
        charge.currency,
        charge.capture,
        charge.description,
        presence,
        dict(passed.get("network_transaction_ids") or {}),
    )


def is_final(charge: Charge) -> bool:
    return ChargeStatus(charge.status) in FINAL_CHARGE_STATUSES


def stores_reply(charge: Charge) -> bool:
    """Whether the charge's reply is stored for its Idempotency-Key: a final one, and a
    ``requires_action`` one (its answer stands until the customer acts, and replays byte for byte)."""
    return is_final(charge) or ChargeStatus(charge.status) is ChargeStatus.REQUIRES_ACTION


def awaits_customer(charge: Charge) -> bool:
    return ChargeStatus(charge.status) is ChargeStatus.REQUIRES_ACTION


def attempt_result(
    outcome: AttemptOutcome, next_check_at: datetime | None, expires_at: datetime | None = None
) -> AttemptResult:
    """What an attempt's row records of its outcome; an unknown one is looked up at ``next_check_at``,
    one waiting for its customer at ``expires_at`` (when its authentication expires)."""
    result = outcome.result
    if result.outcome is Outcome.ACTION_REQUIRED:
        next_check_at = expires_at
    return AttemptResult(
        status=ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
        gateway_reference=result.reference,
        raw_code=result.code,
        decline_code=result.decline_code,
        message=result.message,
        latency_ms=outcome.latency_ms,
        next_check_at=next_check_at if result.outcome in (Outcome.UNKNOWN, Outcome.ACTION_REQUIRED) else None,
    )


def _refused(result: GatewayResult) -> bool:
    return result.outcome is Outcome.NOT_SENT and result.request_refused


def _not_sent(attempts: Sequence[AttemptOutcome], *, every_candidate_tried: bool) -> dict[str, Any]:
    """Why nothing was sent, in each gateway's words. A 400 only when every candidate gateway was
    tried and refused the request as invalid: the merchant must change it. If one could not be
    reached, a later retry of the same request may go through there: a 503, naming the refusals too."""
    reasons = refusals.joined(
        refusals.reason(a.gateway, a.result.outcome, a.result.code, a.result.message, refused=_refused(a.result))
        for a in attempts
    )
    if every_candidate_tried and all(_refused(a.result) for a in attempts):
        about_token = all(a.result.param == "payment_method" for a in attempts)
        return {
            "failure_code": PAYMENT_METHOD_REJECTED if about_token else REQUEST_REFUSED,
            "failure_message": f"Every gateway refused the {'payment method' if about_token else 'request'}: "
            f"{reasons}.",
        }
    return {"failure_code": UNAVAILABLE, "failure_message": f"No gateway could take the charge: {reasons}."}


def _target(
    outcome: AttemptOutcome, charge: Charge, earlier: Sequence[AttemptOutcome], every_candidate_tried: bool
) -> tuple[ChargeStatus, dict[str, Any]]:
    """The charge status and columns an attempt's result leads to."""
    result = outcome.result
    fields: dict[str, Any] = {"next_action": None}
    if result.authentication is not None:
        fields["authentication"] = result.authentication.render()
    elif result.outcome is Outcome.APPROVED and awaits_customer(charge):
        # Approved after waiting for the customer (a notification says no more): they authenticated.
        fields["authentication"] = {**(charge.authentication or _REQUIRED), "status": "succeeded"}
    if result.card is not None:
        fields.update(
            card_brand=result.card.brand,
            card_last4=result.card.last4,
            card_exp_month=result.card.exp_month,
            card_exp_year=result.card.exp_year,
        )
    if result.outcome is Outcome.APPROVED:
        fields.update(
            gateway=outcome.gateway,
            gateway_reference=result.reference,
            amount_captured=charge.amount if charge.capture else 0,
        )
        return (ChargeStatus.SUCCEEDED if charge.capture else ChargeStatus.AUTHORIZED), fields
    if result.outcome is Outcome.UNKNOWN:
        return ChargeStatus.PROCESSING, fields
    if result.outcome is Outcome.ACTION_REQUIRED:
        # Bound to this gateway: its reference is where the customer authenticates and comes back.
        fields.update(
            gateway=outcome.gateway,
            gateway_reference=result.reference,
            next_action=None if result.next_action is None else result.next_action.render(),
            authentication=fields.get("authentication") or _REQUIRED,
        )
        return ChargeStatus.REQUIRES_ACTION, fields
    if result.outcome is Outcome.NOT_SENT:
        fields.update(_not_sent([*earlier, outcome], every_candidate_tried=every_candidate_tried))
        return ChargeStatus.FAILED, fields
    fields.update(
        failure_code="card_declined",
        decline_code=result.decline_code or "generic_decline",
        failure_message=result.message or "The card was declined.",
    )
    return ChargeStatus.FAILED, fields


def charge_after(
    charge: Charge,
    outcome: AttemptOutcome,
    *,
    earlier: Sequence[AttemptOutcome] = (),
    every_candidate_tried: bool = False,
) -> Charge:
    """The charge as ``outcome`` leaves it, through the state machine. ``earlier``: the attempts of
    the same request before it; if one may still have charged (failover_on_unknown), a failure is
    not final yet. ``every_candidate_tried``: none was left out (by the deadline); a charge whose
    outcome was learnt later (a lookup) does not know, and is never answered as refused."""
    target, fields = _target(outcome, charge, earlier, every_candidate_tried)
    earlier_unknown = any(attempt.result.outcome is Outcome.UNKNOWN for attempt in earlier)
    if target is ChargeStatus.FAILED and earlier_unknown:
        target, fields = ChargeStatus.PROCESSING, {}
    return _moved(charge, target, fields)


def charge_expired(charge: Charge) -> Charge:
    """A ``requires_action`` charge whose customer never finished: ``canceled``, nothing held."""
    fields = {
        "next_action": None,
        "failure_code": "authentication_expired",
        "failure_message": "The customer did not authenticate before the authentication expired.",
        "authentication": {**(charge.authentication or _REQUIRED), "status": "expired"},
    }
    return _moved(charge, ChargeStatus.CANCELED, fields)


def _moved(charge: Charge, target: ChargeStatus, fields: dict[str, Any]) -> Charge:
    status = transition(ChargeStatus(charge.status), target)
    # Never before created_at, which another replica's clock may have set.
    return replace(charge, status=status.value, updated_at=max(datetime.now(UTC), charge.created_at), **fields)


def outcome_event(actor: Actor, origin: Origin, charge_id: str, outcome: AttemptOutcome) -> AuditEvent:
    result = outcome.result
    return trail.attempt_outcome(
        actor,
        origin,
        charge_id=charge_id,
        attempt_id=outcome.attempt_id,
        gateway=outcome.gateway,
        status=ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
        code=result.code,
        decline_code=result.decline_code,
        reference=result.reference,
        latency_ms=outcome.latency_ms,
    )


def status_events(actor: Actor, origin: Origin, charge: Charge) -> list[AuditEvent]:
    event = trail.charge_status(
        actor,
        origin,
        charge_id=charge.id,
        status=charge.status,
        amount=charge.amount,
        currency=charge.currency,
        gateway=charge.gateway,
        failure_code=charge.failure_code,
        decline_code=charge.decline_code,
        message=charge.failure_message,
    )
    return [] if event is None else [event]


async def settle(
    connection: Connection, charge: Charge, outcome: AttemptOutcome, actor: Actor, *, request_id: str
) -> Charge | None:
    """Move a pending, processing or requires_action ``charge`` by an outcome learnt after its
    request (a lookup, a gateway's notification, the customer's confirm), with its audit event; a
    final reply goes to the key whose request died. None: someone else moved it first."""
    return await settle_as(
        connection, charge, charge_after(charge, outcome), actor, request_id=request_id, outcome=outcome
    )


async def settle_as(
    connection: Connection,
    charge: Charge,
    updated: Charge,
    actor: Actor,
    *,
    request_id: str,
    outcome: AttemptOutcome | None = None,
) -> Charge | None:
    """Write ``updated`` (``charge`` as the state machine moved it) if ``charge`` is still in the
    status it was read in; a stored credential's network transaction id is kept with its ``pm_``."""
    answer = reply_for(updated, request_id)
    moved = await charge_writes.settle_charge(
        connection,
        updated,
        expected_status=charge.status,
        reply_status=answer.status,
        reply_body=answer.body,
        store_reply=stores_reply(updated),
        audit=outbox_params(status_events(actor, Origin(), updated), conditional=True),
    )
    if moved is not None and outcome is not None:
        await remember_credential(connection, moved, outcome)
    return moved


async def remember_credential(connection: Connection, charge: Charge, outcome: AttemptOutcome) -> None:
    """A customer-present charge that set up a stored credential: keep the network transaction id
    the gateway gave with the ``pm_`` it was charged to, for later merchant-initiated charges."""
    network_transaction_id = outcome.result.network_transaction_id
    if (
        network_transaction_id is None
        or charge.payment_method is None
        or charge.setup_future_usage is None
        or outcome.result.outcome is not Outcome.APPROVED
    ):
        return
    await payment_methods_repo.remember_network_transaction_id(
        connection, charge.merchant_id, charge.payment_method, outcome.gateway, network_transaction_id
    )
