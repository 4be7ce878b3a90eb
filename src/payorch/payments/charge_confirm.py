"""``POST /v1/charges/{id}/confirm`` on the operation runner: finish a charge whose customer came
back from authenticating (3-D Secure).

The gateway the charge is bound to is asked to complete the payment (Adyen's ``/payments/details``
with what came back with the customer; Stripe re-reads the PaymentIntent; the sandbox reads its
books), and its answer is applied exactly as a lookup's or a notification's would be
(``ChargeRecovery.apply_result``), under the charge's row lock and a guarded write. So a confirm and
a verified notification may race: whichever comes second finds the charge final and answers it as
it stands. The route takes no Idempotency-Key: confirming twice asks the gateway twice for the same
payment (which it completes at most once) and answers the same charge.

=============================  ===========================================================
gateway answer                 answer
=============================  ===========================================================
approved                       200, the charge ``succeeded`` (or ``authorized``)
declined (authentication       402 ``card_error``, the charge ``failed``
failed)
still waiting for the          202, the charge still ``requires_action``
customer
unknown (timeout, 5xx)         502 ``gateway_outcome_unknown``, the charge unchanged; retry
not sent                       503 ``gateway_unavailable``, the charge unchanged; retry
=============================  ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

from pydantic import Field, StrictStr, StringConstraints

from payorch.errors import GatewayOutcomeUnknown, InvalidState, NoGatewayAvailable, NotFound
from payorch.gateways.base import GatewayResult, Outcome
from payorch.orchestration.executor import NO_ANSWER, call_once, interpret_lookup
from payorch.orchestration.routing import GatewayResolver
from payorch.payments import charges as lifecycle
from payorch.payments.charge_recovery import ChargeRecovery
from payorch.payments.operations import OperationRequest, OperationRunner, Reply
from payorch.payments.schemas import StrictModel
from payorch.payments.states import AttemptStatus
from payorch.security.api_keys import Caller
from payorch.storage import charges as repo
from payorch.storage.charges import Attempt, Charge
from payorch.storage.database import Database
from payorch.storage.idempotency import KeyExists
from payorch.storage.sql import Connection

DetailKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.]+$")]
DetailValue = Annotated[StrictStr, StringConstraints(max_length=20_000)]


class ConfirmParams(StrictModel):
    details: dict[DetailKey, DetailValue] | None = Field(
        default=None,
        max_length=10,
        description="What came back with the customer, passed to the gateway as it gave it (a "
        "`redirectResult` or `threeDSResult` from the return URL's query or the frontend SDK). Leave out "
        "where the gateway keeps the whole state (a PaymentIntent is re-read).",
    )


@dataclass(frozen=True, slots=True)
class Confirmation:
    charge_id: str
    details: dict[str, str]


@dataclass(frozen=True, slots=True)
class _Opened:
    charge: Charge
    attempt: Attempt
    details: dict[str, str]


def confirm_reply(charge: Charge, request_id: str) -> Reply:
    """The charge as it stands: 200 once final (a confirm creates nothing), else its own answer."""
    answer = lifecycle.reply_for(charge, request_id)
    return replace(answer, status=200) if answer.status == 201 else answer


class ConfirmCharge:
    def __init__(self, db: Database, gateways: GatewayResolver, recovery: ChargeRecovery) -> None:
        self._db = db
        self._gateways = gateways
        self._recovery = recovery

    async def open(self, request: OperationRequest[Confirmation]) -> _Opened | KeyExists | Reply:
        caller, charge_id = request.caller, request.params.charge_id
        async with self._db.connection() as connection:
            # The attempts first: a notification settles the attempt and the charge in one
            # transaction, so a charge read after them is never behind them.
            attempts = await repo.list_attempts(connection, caller.merchant_id, charge_id)
            charge = await self._charge(connection, caller, charge_id)
        if lifecycle.is_final(charge):  # a notification (or another confirm) finished it first
            return confirm_reply(charge, request.request_id)
        if not lifecycle.awaits_customer(charge):
            raise InvalidState(
                f"This charge is not waiting for customer authentication ({charge.status}).",
                code="charge_invalid_state",
            )
        waiting = [a for a in attempts if a.status == AttemptStatus.REQUIRES_ACTION.value]
        if not waiting:  # cannot happen while the charge waits; answer it as it stands
            return confirm_reply(charge, request.request_id)
        return _Opened(charge, waiting[-1], request.params.details)

    async def resume(
        self,
        connection: Connection,  # noqa: ARG002
        request: OperationRequest[Confirmation],  # noqa: ARG002
        object_id: str | None,  # noqa: ARG002
    ) -> Reply:
        raise RuntimeError("confirm takes no idempotency key to resume")

    async def execute(self, opened: _Opened) -> GatewayResult:
        charge, attempt = opened.charge, opened.attempt
        configured = await self._gateways.gateway(attempt.merchant_id, attempt.gateway)
        if configured is None or charge.gateway_reference is None:
            return GatewayResult(Outcome.NOT_SENT, code="gateway_not_configured")
        request = lifecycle.job_for(charge).request(
            attempt.id, attempt.token, attempt.gateway, request_authentication=attempt.authentication_requested
        )
        call = configured.gateway.complete_authentication(request, charge.gateway_reference, opened.details)
        return interpret_lookup(await call_once(call, configured.race_timeout, NO_ANSWER))

    async def close(self, request: OperationRequest[Confirmation], opened: _Opened, result: GatewayResult) -> Reply:
        if result.outcome is Outcome.UNKNOWN:
            raise GatewayOutcomeUnknown(
                "The gateway's answer was lost; the charge still waits for its customer. Retrying is safe."
            )
        if result.outcome is Outcome.NOT_SENT:
            raise NoGatewayAvailable("The gateway could not be reached; the charge is unchanged. Retry later.")
        if result.outcome is not Outcome.ACTION_REQUIRED:
            await self._recovery.apply_result(opened.attempt, result, request.caller.actor())
        async with self._db.connection() as connection:
            charge = await self._charge(connection, request.caller, opened.charge.id)
        return confirm_reply(charge, request.request_id)

    async def _charge(self, connection: Connection, caller: Caller, charge_id: str) -> Charge:
        charge = await repo.get_charge(connection, caller.merchant_id, charge_id, livemode=caller.livemode)
        if charge is None:  # unknown, or another merchant's or mode's: the same answer
            raise NotFound(f"No such charge: '{charge_id}'", param="id")
        return charge


class ConfirmService:
    def __init__(self, runner: OperationRunner, operation: ConfirmCharge) -> None:
        self._runner = runner
        self._operation = operation

    async def confirm(self, caller: Caller, charge_id: str, details: dict[str, str], *, request_id: str) -> Reply:
        """Finish a ``requires_action`` charge after its customer came back; a final one answers as it is."""
        request = self._runner.request(
            caller,
            Confirmation(charge_id, details),
            request_id=request_id,
            idempotency_key=None,
            raw_body=None,
            path="",
        )
        return await self._runner.run(self._operation, request)


__all__ = ["ConfirmCharge", "ConfirmParams", "ConfirmService", "confirm_reply"]
