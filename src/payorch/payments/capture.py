"""Capturing and canceling (voiding) an authorized charge at the gateway that holds it.

Both go through the charge state machine with a guarded UPDATE (expected status ``authorized``), in a
short transaction after the gateway call, never across it. The idempotency key sent to the gateway is
derived from the charge: ``<charge id>_capture_<amount>`` and ``<charge id>_void``. The capture
amount is recorded on the charge under its row lock before the call (``capture_requested_amount``),
so one charge never sends two different capture amounts, and a retry after a lost answer sends the
very same request, which the gateway performs at most once.

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

from typing import Literal

from pydantic import Field, StrictInt
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.audit.events import AuditEvent, Resource, record
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
from payorch.gateways.registry import GatewayRegistry
from payorch.money import MAX_AMOUNT
from payorch.payments.gateway_calls import bounded, unknown_result
from payorch.payments.schemas import StrictModel
from payorch.payments.states import ChargeStatus, transition
from payorch.security.api_keys import Caller
from payorch.storage import captures
from payorch.storage import charges as repo
from payorch.storage.charges import Charge
from payorch.storage.engine import SessionFactory, unit_of_work

Operation = Literal["capture", "void"]


class CaptureParams(StrictModel):
    amount: StrictInt | None = Field(
        default=None,
        gt=0,
        le=MAX_AMOUNT,
        description="How much of the authorized amount to capture (minor units); the whole by default. "
        "A charge is captured once: the rest of the authorization is released.",
    )


def _not_authorized(charge: Charge, operation: Operation) -> ApiError:
    status = ChargeStatus(charge.status)
    verb = "captured" if operation == "capture" else "canceled"
    if status is ChargeStatus.SUCCEEDED:
        if operation == "capture":
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


def _error_for(result: GatewayResult, operation: Operation) -> ApiError:
    noun = "capture" if operation == "capture" else "cancellation"
    if result.outcome is Outcome.UNKNOWN:
        return GatewayOutcomeUnknown(
            f"The gateway's answer to the {noun} was lost; the charge is unchanged. Retrying is safe: "
            "the gateway performs it at most once."
        )
    if result.outcome is Outcome.NOT_SENT:
        return NoGatewayAvailable(f"The gateway could not be reached; no {noun} was made. Retry later.")
    return GatewayRefused(f"The gateway refused the {noun} ({result.code or 'refused'}); the charge is unchanged.")


class CaptureService:
    """Capture and cancel, routed to the gateway that holds the charge (``gateway_reference``)."""

    def __init__(self, sessions: SessionFactory, registry: GatewayRegistry) -> None:
        self._sessions = sessions
        self._registry = registry

    async def capture(self, caller: Caller, charge_id: str, amount: int | None) -> Charge:
        """Capture ``amount`` (default: all) of an authorized charge; once per charge."""
        async with unit_of_work(self._sessions) as session:
            charge = await self._locked(session, caller, charge_id)
            if ChargeStatus(charge.status) is not ChargeStatus.AUTHORIZED:
                raise _not_authorized(charge, "capture")
            wanted = charge.amount if amount is None else amount
            if wanted > charge.amount:
                raise InvalidRequest(
                    f"Cannot capture {wanted}: only {charge.amount} was authorized.",
                    param="amount",
                    code="amount_too_large",
                )
            sent = await captures.claim(session, charge.merchant_id, charge.id, wanted)
            if sent is not None and sent != wanted:
                raise InvalidState(
                    f"A capture of {sent} was already sent for this charge; retry with amount {sent}.",
                    param="amount",
                    code="capture_in_progress",
                )
        result = await self._call(charge, "capture", wanted)
        async with unit_of_work(self._sessions) as session:
            if result.outcome in (Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE, Outcome.NOT_SENT):
                await captures.release(session, charge.merchant_id, charge.id, wanted)
            answer = await self._settle(session, caller, charge, result, ChargeStatus.SUCCEEDED, amount_captured=wanted)
        if isinstance(answer, ApiError):
            raise answer
        return answer

    async def cancel(self, caller: Caller, charge_id: str) -> Charge:
        """Void an authorized charge, releasing the customer's funds. Canceling twice answers the charge."""
        async with unit_of_work(self._sessions) as session:
            charge = await self._locked(session, caller, charge_id)
        status = ChargeStatus(charge.status)
        if status is ChargeStatus.CANCELED:
            return charge
        if status is not ChargeStatus.AUTHORIZED:
            raise _not_authorized(charge, "void")
        result = await self._call(charge, "void", 0)
        async with unit_of_work(self._sessions) as session:
            answer = await self._settle(session, caller, charge, result, ChargeStatus.CANCELED)
        if isinstance(answer, ApiError):
            raise answer
        return answer

    async def _settle(
        self,
        session: AsyncSession,
        caller: Caller,
        charge: Charge,
        result: GatewayResult,
        target: ChargeStatus,
        **fields: int,
    ) -> Charge | ApiError:
        """Apply the gateway's answer: move the charge from ``authorized`` (guarded) and audit it, or
        find that a concurrent retry of the very same operation (same gateway key) already did."""
        capture = target is ChargeStatus.SUCCEEDED
        action = "charge.captured" if capture else "charge.canceled"
        operation: Operation = "capture" if capture else "void"
        amount = fields.get("amount_captured")
        if result.outcome is not Outcome.APPROVED:
            await self._audit(session, caller, charge, action, result, amount=amount)
            return _error_for(result, operation)
        updated = await repo.update_charge(
            session,
            charge.merchant_id,
            charge.id,
            expected_status=ChargeStatus.AUTHORIZED,
            status=transition(ChargeStatus.AUTHORIZED, target).value,
            **fields,
        )
        if updated is not None:
            await self._audit(session, caller, charge, action, result, amount=amount)
            return updated
        current = await self._locked(session, caller, charge.id)
        if ChargeStatus(current.status) is target and all(getattr(current, k) == v for k, v in fields.items()):
            return current
        return _not_authorized(current, operation)

    async def _locked(self, session: AsyncSession, caller: Caller, charge_id: str) -> Charge:
        charge = await repo.get_charge(
            session, caller.merchant_id, charge_id, livemode=caller.livemode, for_update=True
        )
        if charge is None:
            raise NotFound(f"No such charge: '{charge_id}'", param="id")
        return charge

    async def _call(self, charge: Charge, operation: Operation, amount: int) -> GatewayResult:
        configured = self._registry.get(charge.gateway or "")
        if configured is None or charge.gateway_reference is None:
            return GatewayResult(
                Outcome.NOT_SENT, code="gateway_not_configured", message=f"Gateway {charge.gateway} is not configured."
            )
        gateway = configured.gateway
        if operation == "capture":
            key = f"{charge.id}_capture_{amount}"
            call = gateway.capture(charge.gateway_reference, amount, charge.currency, key)
        else:
            call = gateway.void(charge.gateway_reference, f"{charge.id}_void")
        return await bounded(call, configured.timeout, unknown_result())

    @staticmethod
    async def _audit(
        session: AsyncSession,
        caller: Caller,
        charge: Charge,
        action: str,
        result: GatewayResult,
        *,
        amount: int | None = None,
    ) -> None:
        outcome = {Outcome.APPROVED: "success", Outcome.UNKNOWN: "unknown"}.get(result.outcome, "failure")
        details: dict[str, object] = {"gateway": charge.gateway, "gateway_code": result.code}
        if amount is not None:
            details.update(amount=amount, currency=charge.currency)
        await record(
            session,
            AuditEvent(
                actor=caller.actor(),
                origin=caller.origin(),
                action=action,
                resource=Resource(type="charge", id=charge.id),
                outcome=outcome,
                details=details,
            ),
        )
