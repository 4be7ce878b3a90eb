"""Capturing and canceling (voiding) an authorized charge at the gateway that holds it, on the
operation runner.

Both go through the charge state machine with a guarded write (expected status ``authorized``)
after the gateway call, never across it. The key sent to the gateway is derived from the charge:
``<charge id>_capture_<amount>`` and ``<charge id>_void``. The capture amount is recorded on the
charge before the call (``capture_requested_amount``), so one charge never sends two different
capture amounts, and a retry after a lost answer sends the very same request, which the gateway
performs at most once.

=========================  ===============================================================
gateway answer             result
=========================  ===============================================================
approved                   charge ``succeeded`` (capture) or ``canceled`` (void): 200
refused                    charge unchanged: 402 ``gateway_refused``
not sent                   charge unchanged: 503 ``gateway_unavailable``; retry later
unknown (timeout, 5xx)     charge unchanged: 502 ``gateway_outcome_unknown``; retry: it is safe
=========================  ===============================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, StrictInt

from payorch.audit import trail
from payorch.audit.events import AuditAction, AuditEvent, Resource, outbox_params, record_many
from payorch.audit.events import Outcome as AuditOutcome
from payorch.audit.refusals import RefusalAudit
from payorch.errors import (
    ApiError,
    GatewayOutcomeUnknown,
    GatewayRefused,
    InvalidRequest,
    InvalidState,
    NoGatewayAvailable,
    NotFound,
)
from payorch.gateways.base import GatewayResult, Outcome
from payorch.money import MAX_AMOUNT
from payorch.orchestration.executor import NO_ANSWER, call_once
from payorch.orchestration.routing import GatewayResolver
from payorch.payments.operations import OperationRequest, OperationRunner, Reply, reply
from payorch.payments.schemas import StrictModel, render_charge
from payorch.payments.states import ChargeStatus, transition
from payorch.security.api_keys import Caller
from payorch.storage import charge_writes
from payorch.storage import charges as repo
from payorch.storage.charges import Charge
from payorch.storage.database import Database
from payorch.storage.idempotency import KeyExists
from payorch.storage.sql import Connection

Kind = Literal["capture", "void"]


class CaptureParams(StrictModel):
    amount: StrictInt | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        description="How much of the authorized amount to capture (minor units); the whole by default. "
        "A charge is captured once: the rest of the authorization is released.",
    )


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A capture or a void of one charge: ``amount`` is what is captured (0 for a void)."""

    charge_id: str
    kind: Kind
    amount: int | None = None


@dataclass(frozen=True, slots=True)
class _Opened:
    charge: Charge
    amount: int


def _not_authorized(charge: Charge, kind: Kind) -> ApiError:
    status = ChargeStatus(charge.status)
    verb = "captured" if kind == "capture" else "canceled"
    if status is ChargeStatus.SUCCEEDED:
        if kind == "capture":
            return InvalidState("This charge has already been captured.", code="charge_already_captured")
        return InvalidState("A captured charge cannot be canceled; refund it instead.", code="charge_already_captured")
    if status is ChargeStatus.CANCELED:
        return InvalidState(f"This charge was canceled and cannot be {verb}.", code="charge_canceled")
    if status is ChargeStatus.FAILED:
        return InvalidState(f"A failed charge cannot be {verb}.", code="charge_failed")
    return InvalidState(
        f"This charge's outcome is not known yet ({status}); it can be {verb} once it is authorized.",
        code="charge_invalid_state",
    )


def _error_for(result: GatewayResult, kind: Kind) -> ApiError:
    noun = "capture" if kind == "capture" else "cancellation"
    if result.outcome is Outcome.UNKNOWN:
        return GatewayOutcomeUnknown(
            f"The gateway's answer to the {noun} was lost; the charge is unchanged. Retrying is safe: "
            "the gateway performs it at most once."
        )
    if result.outcome is Outcome.NOT_SENT:
        return NoGatewayAvailable(f"The gateway could not be reached; no {noun} was made. Retry later.")
    return GatewayRefused(f"The gateway refused the {noun} ({result.code or 'refused'}); the charge is unchanged.")


def _event(caller: Caller, charge: Charge, kind: Kind, result: GatewayResult, amount: int) -> AuditEvent:
    outcome: AuditOutcome = "success" if result.outcome is Outcome.APPROVED else "failure"
    if result.outcome is Outcome.UNKNOWN:
        outcome = "unknown"
    details: dict[str, object] = {"gateway": charge.gateway, "gateway_code": result.code}
    if kind == "capture":
        details.update(amount=amount, currency=charge.currency)
    return AuditEvent(
        actor=caller.actor(),
        origin=caller.origin(),
        action="charge.captured" if kind == "capture" else "charge.canceled",
        resource=Resource(type="charge", id=charge.id),
        outcome=outcome,
        details=details,
    )


class FollowUpCharge:
    """Capture or void, routed to the gateway that holds the charge (``gateway_reference``). These
    routes take no Idempotency-Key: the gateway key derived from the charge makes a retry safe."""

    def __init__(self, db: Database, gateways: GatewayResolver) -> None:
        self._db = db
        self._gateways = gateways

    async def open(self, request: OperationRequest[FollowUp]) -> _Opened | KeyExists | Reply:
        caller, params = request.caller, request.params
        async with self._db.transaction() as tx:
            charge = await self._locked(tx, caller, params.charge_id)
            status = ChargeStatus(charge.status)
            if params.kind == "void":
                if status is ChargeStatus.CANCELED:  # canceling twice answers the charge
                    return reply(200, render_charge(charge))
                if status is not ChargeStatus.AUTHORIZED:
                    raise _not_authorized(charge, "void")
                return _Opened(charge, 0)
            if status is not ChargeStatus.AUTHORIZED:
                raise _not_authorized(charge, "capture")
            wanted = charge.amount if params.amount is None else params.amount
            if wanted > charge.amount:
                raise InvalidRequest(
                    f"Cannot capture {wanted}: only {charge.amount} was authorized.",
                    param="amount",
                    code="amount_too_large",
                )
            sent = await charge_writes.claim_capture(tx, charge.merchant_id, charge.id, wanted)
            if sent is not None and sent != wanted:
                raise InvalidState(
                    f"A capture of {sent} was already sent for this charge; retry with amount {sent}.",
                    param="amount",
                    code="capture_in_progress",
                )
        return _Opened(charge, wanted)

    async def resume(self, connection: Connection, request: OperationRequest[FollowUp], object_id: str | None) -> Reply:  # noqa: ARG002
        raise RuntimeError("captures and voids take no idempotency key to resume")

    async def execute(self, opened: _Opened) -> GatewayResult:
        charge = opened.charge
        configured = await self._gateways.gateway(charge.merchant_id, charge.gateway or "")
        if configured is None or charge.gateway_reference is None:
            return GatewayResult(
                Outcome.NOT_SENT, code="gateway_not_configured", message=f"Gateway {charge.gateway} is not configured."
            )
        if opened.amount:
            call = configured.gateway.capture(
                charge.gateway_reference, opened.amount, charge.currency, f"{charge.id}_capture_{opened.amount}"
            )
        else:
            call = configured.gateway.void(charge.gateway_reference, f"{charge.id}_void")
        return await call_once(call, configured.timeout, NO_ANSWER)

    async def close(self, request: OperationRequest[FollowUp], opened: _Opened, result: GatewayResult) -> Reply:
        """Apply the gateway's answer: move the charge from ``authorized`` and audit it, or find that
        a concurrent retry of the very same operation (same gateway key) already did."""
        charge, kind = opened.charge, request.params.kind
        capture = kind == "capture"
        target = ChargeStatus.SUCCEEDED if capture else ChargeStatus.CANCELED
        event = _event(request.caller, charge, kind, result, opened.amount)
        if result.outcome is not Outcome.APPROVED:
            async with self._db.transaction() as tx:
                if capture and result.outcome is not Outcome.UNKNOWN:
                    await charge_writes.release_capture(tx, charge.merchant_id, charge.id, opened.amount)
                await record_many(tx, [event])
            raise _error_for(result, kind)
        async with self._db.transaction() as tx:
            updated = await charge_writes.move_authorized(
                tx,
                charge,
                status=transition(ChargeStatus.AUTHORIZED, target).value,
                amount_captured=opened.amount if capture else charge.amount_captured,
                audit=outbox_params([event], conditional=True),
            )
            if updated is None:
                updated = await self._locked(tx, request.caller, charge.id)
        done = ChargeStatus(updated.status) is target and (not capture or updated.amount_captured == opened.amount)
        if not done:
            raise _not_authorized(updated, kind)
        return reply(200, render_charge(updated))

    async def _locked(self, connection: Connection, caller: Caller, charge_id: str) -> Charge:
        charge = await repo.get_charge(
            connection, caller.merchant_id, charge_id, livemode=caller.livemode, for_update=True
        )
        if charge is None:
            raise NotFound(f"No such charge: '{charge_id}'", param="id")
        return charge


REFUSALS = (InvalidRequest, InvalidState, NotFound)
"""What a capture or a cancel is refused with before anything moves: audited on their own
(the refused request's transaction rolled back), PCI DSS 10.2.1.2."""


def _refused(caller: Caller, params: FollowUp, refusal: ApiError) -> AuditEvent:
    capture = params.kind == "capture"
    details: dict[str, object] = {"param": refusal.param}
    if capture:
        details["amount"] = params.amount
    return trail.refused(
        caller.actor(),
        caller.origin(),
        action=AuditAction.CHARGE_CAPTURE_REFUSED if capture else AuditAction.CHARGE_CANCEL_REFUSED,
        resource=Resource(type="charge", id=params.charge_id[:128] or "-"),
        code=refusal.error_code,
        message=refusal.message,
        **details,
    )


class CaptureService:
    def __init__(self, runner: OperationRunner, operation: FollowUpCharge, refusals: RefusalAudit) -> None:
        self._runner = runner
        self._operation = operation
        self._refusals = refusals

    async def capture(self, caller: Caller, charge_id: str, amount: int | None, *, request_id: str) -> Reply:
        """Capture ``amount`` (default: all) of an authorized charge; once per charge."""
        return await self._run(caller, FollowUp(charge_id, "capture", amount), request_id)

    async def cancel(self, caller: Caller, charge_id: str, *, request_id: str) -> Reply:
        """Void an authorized charge, releasing the customer's funds. Canceling twice answers the charge."""
        return await self._run(caller, FollowUp(charge_id, "void"), request_id)

    async def _run(self, caller: Caller, params: FollowUp, request_id: str) -> Reply:
        request = self._runner.request(
            caller, params, request_id=request_id, idempotency_key=None, raw_body=None, path=""
        )
        try:
            return await self._runner.run(self._operation, request)
        except REFUSALS as refusal:
            await self._refusals.record(_refused(caller, params, refusal), kind="refusal")
            raise
