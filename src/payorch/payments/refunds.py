"""Refunds: several partial refunds of a captured charge, up to what was captured, at the gateway
that holds the charge.

1. Under the charge's row lock: check the refundable amount (captured minus every refund not failed,
   in flight ones included, so two concurrent refunds can never take the same remainder), insert the
   refund ``pending``, write ``refund.created``. Commit.
2. Call the gateway with the refund id as its idempotency key.
3. Move the refund to ``succeeded`` (adding its amount to the charge's ``amount_refunded`` in the
   same transaction), ``failed``, or ``processing`` when the answer was lost.

A refund left ``pending`` (the request died) or ``processing`` is sent again, with the same
idempotency key, by :meth:`RefundService.resolve_once` (a background loop) or by a retry with the same
``Idempotency-Key``: the gateway refunds at most once per key.

API answers: 201 succeeded · 202 processing · 402 ``gateway_refused`` (refund failed) · 503
``gateway_unavailable`` (never sent; refund failed, nothing moved).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictInt, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.audit.events import Actor, AuditEvent, Origin, Resource, record
from payorch.errors import ApiError, GatewayRefused, InvalidRequest, InvalidState, NoGatewayAvailable, NotFound
from payorch.gateways.base import GatewayResult, Outcome
from payorch.gateways.registry import GatewayRegistry
from payorch.ids import new_id
from payorch.money import MAX_AMOUNT
from payorch.payments import idempotency, replay
from payorch.payments.gateway_calls import bounded, unknown_result
from payorch.payments.schemas import MetadataKey, MetadataValue, StrictModel
from payorch.payments.service import Reply
from payorch.payments.states import ChargeStatus
from payorch.security.api_keys import Caller
from payorch.settings import IdempotencyConfig, ReconcilerConfig
from payorch.storage import charges as charges_repo
from payorch.storage import idempotency as idem_repo
from payorch.storage import refunds as repo
from payorch.storage.charges import Charge
from payorch.storage.engine import SessionFactory, unit_of_work
from payorch.storage.refunds import NewRefund, Refund

log = logging.getLogger("payorch.refunds")

RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]
RefundStatus = Literal["pending", "processing", "succeeded", "failed"]
FINAL_STATUSES = frozenset({"succeeded", "failed"})
RESOLVER_ACTOR = Actor(user="system:refund-resolver")


class RefundCreate(StrictModel):
    charge: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(description="The charge to refund.")
    amount: StrictInt | None = Field(
        default=None, gt=0, le=MAX_AMOUNT, description="Minor units; by default all that is still refundable."
    )
    reason: RefundReason | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=50)


class RefundOut(BaseModel):
    id: str
    object: Literal["refund"] = "refund"
    amount: int
    currency: str
    charge: str
    status: RefundStatus
    reason: RefundReason | None
    gateway: str
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    livemode: bool
    metadata: dict[str, str]
    created: int
    updated: int


def render_refund(refund: Refund) -> dict[str, Any]:
    return {
        "id": refund.id,
        "object": "refund",
        "amount": refund.amount,
        "currency": refund.currency,
        "charge": refund.charge_id,
        "status": refund.status,
        "reason": refund.reason,
        "gateway": refund.gateway,
        "gateway_reference": refund.gateway_reference,
        "failure_code": refund.failure_code,
        "failure_message": refund.failure_message,
        "livemode": refund.livemode,
        "metadata": refund.metadata,
        "created": int(refund.created_at.timestamp()),
        "updated": int(min(refund.updated_at, datetime.now(UTC)).timestamp()),
    }


def reply_for(refund: Refund, request_id: str) -> Reply:
    """The answer a refund in its current state gets."""
    if refund.status == "succeeded":
        return Reply(201, replay.dumps(render_refund(refund)))
    if refund.status in ("pending", "processing"):
        return Reply(202, replay.dumps(render_refund(refund)))
    error: ApiError
    if refund.failure_code == "gateway_unavailable":
        error = NoGatewayAvailable(
            f"Refund {refund.id} failed: the gateway could not be reached and nothing was refunded.",
            charge=refund.charge_id,
        )
    else:
        error = GatewayRefused(
            f"Refund {refund.id} failed: the gateway refused it ({refund.failure_code}).", charge=refund.charge_id
        )
    return Reply(error.status, replay.dumps(error.body(request_id)))


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


class RefundService:
    def __init__(
        self,
        sessions: SessionFactory,
        registry: GatewayRegistry,
        idempotency_config: IdempotencyConfig,
        reconciler_config: ReconcilerConfig,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._idem = idempotency_config
        self._recon = reconciler_config

    async def create(
        self,
        caller: Caller,
        params: RefundCreate,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: Any,
        path: str,
    ) -> Reply:
        """Refund (part of) a captured charge; the reply is what the API answers."""
        print_ = idempotency.fingerprint("POST", path, raw_body, caller.livemode)
        async with unit_of_work(self._sessions) as session:
            refund: Refund | None = None
            if idempotency_key is not None:
                taken = await replay.take_key(
                    session,
                    caller.merchant_id,
                    idempotency_key,
                    print_,
                    path,
                    stale_after_seconds=self._idem.stale_after_seconds,
                )
                if isinstance(taken, Reply):
                    return taken
                if isinstance(taken, replay.Resume):
                    refund = await repo.get_refund(session, caller.merchant_id, taken.object_id)
            if refund is None:
                refund = await self._open(session, caller, params)
                if idempotency_key is not None:
                    await replay.attach(session, caller.merchant_id, idempotency_key, refund.id)
            elif refund.status in FINAL_STATUSES:
                reply = reply_for(refund, request_id)
                if idempotency_key is not None:
                    await replay.complete(session, caller.merchant_id, idempotency_key, reply, refund.id)
                return reply
            charge = await charges_repo.get_charge(session, caller.merchant_id, refund.charge_id)
        reference = charge.gateway_reference if charge is not None else None
        return await self._send(refund, reference, caller.actor(), caller.origin(), request_id, idempotency_key)

    async def _open(self, session: AsyncSession, caller: Caller, params: RefundCreate) -> Refund:
        charge = await charges_repo.get_charge(
            session, caller.merchant_id, params.charge, livemode=caller.livemode, for_update=True
        )
        if charge is None:
            raise InvalidRequest(f"No such charge: '{params.charge}'", param="charge", code="resource_missing")
        committed = max(charge.amount_refunded, await repo.committed_amount(session, charge.merchant_id, charge.id))
        remaining = _refundable(charge, committed)
        amount = remaining if params.amount is None else params.amount
        if amount > remaining:
            raise InvalidRequest(
                f"Refund amount ({amount}) is greater than what is left to refund on this charge ({remaining}).",
                param="amount",
                code="amount_too_large",
            )
        refund = await repo.insert_refund(
            session,
            NewRefund(
                id=new_id("re"),
                merchant_id=charge.merchant_id,
                charge_id=charge.id,
                livemode=charge.livemode,
                amount=amount,
                currency=charge.currency,
                reason=params.reason,
                gateway=charge.gateway or "",
                metadata=params.metadata,
            ),
        )
        await self._audit(session, caller.actor(), caller.origin(), refund, "refund.created", "success")
        return refund

    async def _send(
        self,
        refund: Refund,
        reference: str | None,
        actor: Actor,
        origin: Origin,
        request_id: str,
        idempotency_key: str | None,
    ) -> Reply:
        configured = self._registry.get(refund.gateway)
        if configured is None or reference is None:
            result = GatewayResult(Outcome.NOT_SENT, code="gateway_not_configured")
        else:
            call = configured.gateway.refund(reference, refund.amount, refund.currency, refund.id)
            result = await bounded(call, configured.timeout, unknown_result())
        return await self._record(refund, result, actor, origin, request_id, idempotency_key)

    async def _record(
        self,
        refund: Refund,
        result: GatewayResult,
        actor: Actor,
        origin: Origin,
        request_id: str,
        idempotency_key: str | None,
    ) -> Reply:
        fields: dict[str, Any]
        if result.outcome is Outcome.APPROVED:
            fields = {"status": "succeeded", "gateway_reference": result.reference}
        elif result.outcome is Outcome.UNKNOWN:
            fields = {"status": "processing"}
        elif result.outcome is Outcome.NOT_SENT:
            fields = {"status": "failed", "failure_code": "gateway_unavailable", "failure_message": result.message}
        else:
            fields = {
                "status": "failed",
                "failure_code": result.code or "refund_declined",
                "failure_message": result.message or "The gateway refused the refund.",
            }
        merchant_id = refund.merchant_id
        async with unit_of_work(self._sessions) as session:
            updated = await repo.update_refund(session, merchant_id, refund.id, expected_status=refund.status, **fields)
            if updated is None:  # finished meanwhile by a concurrent resend of the same refund
                updated = await repo.get_refund(session, merchant_id, refund.id) or refund
            elif updated.status in FINAL_STATUSES:
                if updated.status == "succeeded":
                    await repo.add_to_charge(session, merchant_id, refund.charge_id, refund.amount)
                outcome = "success" if updated.status == "succeeded" else "failure"
                await self._audit(session, actor, origin, updated, f"refund.{updated.status}", outcome)
            reply = reply_for(updated, request_id)
            if updated.status in FINAL_STATUSES:
                key = idempotency_key or await idem_repo.find_in_progress_for_charge(session, merchant_id, refund.id)
                if key is not None:
                    await replay.complete(session, merchant_id, key, reply, refund.id)
        log.info("refund %s of charge %s: %s", refund.id, refund.charge_id, updated.status)
        return reply

    @staticmethod
    async def _audit(
        session: AsyncSession, actor: Actor, origin: Origin, refund: Refund, action: str, outcome: str
    ) -> None:
        details: dict[str, Any] = {
            "charge": refund.charge_id,
            "amount": refund.amount,
            "currency": refund.currency,
            "gateway": refund.gateway,
            "reason": refund.reason,
        }
        if refund.failure_code is not None:
            details["failure_code"] = refund.failure_code
        if actor.merchant_id is None:
            actor = actor.model_copy(update={"merchant_id": refund.merchant_id})
        await record(
            session,
            AuditEvent(
                actor=actor,
                origin=origin,
                action=action,
                resource=Resource(type="refund", id=refund.id),
                outcome=outcome,
                details=details,
            ),
        )

    async def get(self, caller: Caller, refund_id: str) -> Refund:
        async with unit_of_work(self._sessions) as session:
            refund = await repo.get_refund(session, caller.merchant_id, refund_id, livemode=caller.livemode)
        if refund is None:
            raise NotFound(f"No such refund: '{refund_id}'", param="id")
        return refund

    async def resolve_once(self, *, limit: int = 100) -> list[Refund]:
        """Send again every refund whose request died (``pending`` past the idempotency stale window)
        or whose answer was lost (``processing``); the same idempotency key makes this safe."""
        now = datetime.now(UTC)
        retry_after = max(1.0, self._recon.first_check_seconds)
        async with unit_of_work(self._sessions) as session:
            due = await repo.lease_unresolved(
                session,
                limit=limit,
                pending_before=now - timedelta(seconds=self._idem.stale_after_seconds),
                processing_before=now - timedelta(seconds=retry_after),
                lease_seconds=60.0,
            )
            references = {}
            for refund in due:
                charge = await charges_repo.get_charge(session, refund.merchant_id, refund.charge_id)
                references[refund.id] = None if charge is None else charge.gateway_reference
        resolved = []
        for refund in due:
            if self._registry.get(refund.gateway) is None or references[refund.id] is None:
                # It may have been sent: only its own gateway can say. Left for an operator.
                log.error("refund %s: gateway %s is not configured here; not resent", refund.id, refund.gateway)
                continue
            try:
                await self._send(refund, references[refund.id], RESOLVER_ACTOR, Origin(), "req_resolver", None)
            except Exception:
                log.exception("resending refund %s failed; it is retried later", refund.id)
                continue
            async with unit_of_work(self._sessions) as session:
                current = await repo.get_refund(session, refund.merchant_id, refund.id)
            if current is not None:
                resolved.append(current)
        return resolved

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.resolve_once()
            except Exception:
                log.exception("refund resolver round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=max(1.0, self._recon.interval_seconds))
