"""``POST /v1/refunds`` on the operation runner.

1. Open, in one short transaction: take the idempotency key, lock the charge, check the refundable
   amount (captured minus every refund not failed, in-flight ones included, so two concurrent
   refunds can never take the same remainder), insert the refund ``pending`` with
   ``refund.created``. (A transaction, not one statement: the remainder is read after the lock.)
2. Execute: the gateway refund, with the refund id as its idempotency key.
3. Close: the refund lifecycle (``payments.refunds``) records the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, StrictInt, StringConstraints

from payorch.audit import trail
from payorch.audit.events import AuditAction, AuditEvent, Resource, outbox_params
from payorch.audit.refusals import RefusalAudit
from payorch.errors import ApiError, InvalidRequest, InvalidState, NotFound
from payorch.gateways.base import GatewayResult
from payorch.ids import new_id
from payorch.money import MAX_AMOUNT
from payorch.payments.operations import OperationRequest, OperationRunner, Reply, store_reply
from payorch.payments.refunds import FINAL_STATUSES, RefundLifecycle, RefundReason, refund_event, reply_for
from payorch.payments.schemas import MetadataKey, MetadataValue, StrictModel
from payorch.payments.states import ChargeStatus
from payorch.security.api_keys import Caller
from payorch.storage import charges as charges_repo
from payorch.storage import idempotency as keys
from payorch.storage import refunds as repo
from payorch.storage.charges import Charge
from payorch.storage.database import Database
from payorch.storage.idempotency import KeyExists
from payorch.storage.refunds import NewRefund, Refund
from payorch.storage.sql import Connection


class RefundCreate(StrictModel):
    charge: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(description="The charge to refund.")
    amount: StrictInt | None = Field(
        default=None, gt=0, le=MAX_AMOUNT, description="Minor units; by default all that is still refundable."
    )
    reason: RefundReason | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=50)


@dataclass(frozen=True, slots=True)
class OpenedRefund:
    refund: Refund
    reference: str | None
    """The charge's payment at its gateway."""


def _refundable(charge: Charge, committed: int) -> int:
    status = ChargeStatus(charge.status)
    if status is ChargeStatus.AUTHORIZED:
        raise InvalidState(
            "This charge is authorized but not captured: capture it first, or cancel it to release the funds.",
            param="charge",
            code="charge_not_captured",
        )
    if status is not ChargeStatus.SUCCEEDED or charge.gateway_reference is None:
        raise InvalidState(f"A {status} charge cannot be refunded.", param="charge", code="charge_not_refundable")
    remaining = charge.amount_captured - committed
    if remaining <= 0:
        raise InvalidState(
            "This charge has already been refunded in full (refunds still in flight count).",
            param="charge",
            code="charge_already_refunded",
        )
    return remaining


class CreateRefund:
    def __init__(self, db: Database, lifecycle: RefundLifecycle) -> None:
        self._db = db
        self._lifecycle = lifecycle

    async def open(self, request: OperationRequest[RefundCreate]) -> OpenedRefund | KeyExists:
        refund_id = new_id("re")
        async with self._db.transaction() as tx:
            if request.key is not None:
                taken = await keys.take(tx, request.key, refund_id)
                if taken is not None:
                    return taken
            return await self._insert(tx, request, refund_id)

    async def resume(
        self, connection: Connection, request: OperationRequest[RefundCreate], object_id: str | None
    ) -> OpenedRefund | Reply:
        merchant_id = request.caller.merchant_id
        refund = None if object_id is None else await repo.get_refund(connection, merchant_id, object_id)
        if refund is None:
            refund_id = new_id("re")
            if request.key is not None:
                await keys.relock(connection, merchant_id, request.key.key, refund_id)
            return await self._insert(connection, request, refund_id)
        if refund.status in FINAL_STATUSES:
            answer = reply_for(refund, request.request_id)
            await store_reply(connection, request, answer, refund.id)
            return answer
        charge = await charges_repo.get_charge(connection, merchant_id, refund.charge_id)
        return OpenedRefund(refund, None if charge is None else charge.gateway_reference)

    async def execute(self, opened: OpenedRefund) -> GatewayResult:
        return await self._lifecycle.send(opened.refund, opened.reference)

    async def close(
        self, request: OperationRequest[RefundCreate], opened: OpenedRefund, result: GatewayResult
    ) -> Reply:
        caller = request.caller
        return await self._lifecycle.record(
            opened.refund, result, caller.actor(), caller.origin(), request.request_id, request.idempotency_key
        )

    async def _insert(self, tx: Connection, request: OperationRequest[RefundCreate], refund_id: str) -> OpenedRefund:
        caller, params = request.caller, request.params
        charge = await charges_repo.get_charge(
            tx, caller.merchant_id, params.charge, livemode=caller.livemode, for_update=True
        )
        if charge is None:
            raise InvalidRequest(f"No such charge: '{params.charge}'", param="charge", code="resource_missing")
        committed = max(charge.amount_refunded, await repo.committed_amount(tx, charge.merchant_id, charge.id))
        remaining = _refundable(charge, committed)
        amount = remaining if params.amount is None else params.amount
        if amount > remaining:
            raise InvalidRequest(
                f"Refund amount ({amount}) is greater than what is left to refund on this charge ({remaining}).",
                param="amount",
                code="amount_too_large",
            )
        new = NewRefund(
            id=refund_id,
            merchant_id=charge.merchant_id,
            charge_id=charge.id,
            livemode=charge.livemode,
            amount=amount,
            currency=charge.currency,
            reason=params.reason,
            gateway=charge.gateway or "",
            metadata=params.metadata,
        )
        created = refund_event(caller.actor(), caller.origin(), new, "refund.created", "success")
        refund = await repo.insert_refund(tx, new, outbox_params([created]))
        return OpenedRefund(refund, charge.gateway_reference)


REFUSALS = (InvalidRequest, InvalidState, NotFound)
"""What a refund is refused with before anything moves (more than is refundable, a charge not
captured or not refundable, no such charge): audited on their own, as the refused request's
transaction rolled back (PCI DSS 10.2.1.2). An idempotency key reused with other parameters
(``IdempotencyMismatch``) is not one of them: it is refused before any charge is read, and the
key's first request is on the trail already (docs/audit.md)."""


def _refused(caller: Caller, params: RefundCreate, refusal: ApiError) -> AuditEvent:
    return trail.refused(
        caller.actor(),
        caller.origin(),
        action=AuditAction.REFUND_REFUSED,
        resource=Resource(type="charge", id=params.charge),
        code=refusal.error_code,
        message=refusal.message,
        param=refusal.param,
        amount=params.amount,
        reason=params.reason,
    )


class RefundService:
    def __init__(
        self,
        db: Database,
        runner: OperationRunner,
        create: CreateRefund,
        lifecycle: RefundLifecycle,
        refusals: RefusalAudit,
    ) -> None:
        self._db = db
        self._runner = runner
        self._create = create
        self.lifecycle = lifecycle
        self._refusals = refusals

    async def create(
        self,
        caller: Caller,
        params: RefundCreate,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: object,
        path: str,
    ) -> Reply:
        """Refund (part of) a captured charge; the reply is what the API answers."""
        request = self._runner.request(
            caller, params, request_id=request_id, idempotency_key=idempotency_key, raw_body=raw_body, path=path
        )
        try:
            return await self._runner.run(self._create, request)
        except REFUSALS as refusal:
            await self._refusals.record(_refused(caller, params, refusal), kind="refusal")
            raise

    async def get(self, caller: Caller, refund_id: str) -> Refund:
        async with self._db.connection() as connection:
            refund = await repo.get_refund(connection, caller.merchant_id, refund_id, livemode=caller.livemode)
        if refund is None:
            raise NotFound(f"No such refund: '{refund_id}'", param="id")
        return refund

    async def resolve_once(self, *, limit: int = 100) -> list[Refund]:
        """Resend every refund left open (the reconciler runs this; tests call it directly)."""
        return await self.lifecycle.resolve_once(limit=limit)
