"""The refund lifecycle: the only owner of outcome -> state -> reply for refunds, and their recovery.

Several partial refunds of a captured charge, up to what was captured, at the gateway that holds it.
A refund is written ``pending`` before the gateway is asked (``refund_create``), then moved to
``succeeded`` (counted on its charge's ``amount_refunded`` in the same statement), ``failed``, or
``processing`` when the answer was lost. A refund left ``pending`` (its request died) or
``processing`` is sent again with the same gateway idempotency key (the refund id) by
:meth:`RefundLifecycle.resolve_once`, which the reconciler runs, or by a retry with the same
``Idempotency-Key``: the gateway refunds at most once per key.

API answers: 201 succeeded · 202 processing · 402 ``gateway_refused`` (refund failed) · 503
``gateway_unavailable`` (never sent; refund failed, nothing moved).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from payorch.audit.events import Actor, AuditEvent, Origin, Resource, outbox_params
from payorch.audit.events import Outcome as AuditOutcome
from payorch.errors import ApiError, GatewayRefused, NoGatewayAvailable
from payorch.gateways.base import GatewayResult, Outcome
from payorch.orchestration.config import ReconcilerConfig
from payorch.orchestration.executor import NO_ANSWER, call_once
from payorch.orchestration.reconcile import Decision
from payorch.orchestration.routing import GatewayResolver
from payorch.payments.config import IdempotencyConfig
from payorch.payments.operations import Reply, error_reply, reply
from payorch.storage import charges as charges_repo
from payorch.storage import idempotency as keys
from payorch.storage import refunds as repo
from payorch.storage.database import Database
from payorch.storage.refunds import NewRefund, Refund

log = logging.getLogger(__name__)

RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]
RefundStatus = Literal["pending", "processing", "succeeded", "failed"]
FINAL_STATUSES = frozenset({"succeeded", "failed"})
RESOLVER_ACTOR = Actor(user="system:refund-resolver")


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
        return reply(201, render_refund(refund))
    if refund.status in ("pending", "processing"):
        return reply(202, render_refund(refund))
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
    return error_reply(error, request_id)


def refund_after(refund: Refund, result: GatewayResult) -> Refund:
    """The refund as the gateway's answer leaves it."""
    now = max(datetime.now(UTC), refund.created_at)
    if result.outcome is Outcome.APPROVED:
        return replace(refund, status="succeeded", gateway_reference=result.reference or refund.gateway_reference,
                       updated_at=now)  # fmt: skip
    if result.outcome is Outcome.UNKNOWN:
        return replace(refund, status="processing", updated_at=now)
    if result.outcome is Outcome.NOT_SENT:
        return replace(refund, status="failed", failure_code="gateway_unavailable", failure_message=result.message,
                       updated_at=now)  # fmt: skip
    return replace(
        refund,
        status="failed",
        failure_code=result.code or "refund_declined",
        failure_message=result.message or "The gateway refused the refund.",
        updated_at=now,
    )


def refund_event(
    actor: Actor, origin: Origin, refund: Refund | NewRefund, action: str, outcome: AuditOutcome
) -> AuditEvent:
    details: dict[str, Any] = {
        "charge": refund.charge_id,
        "amount": refund.amount,
        "currency": refund.currency,
        "gateway": refund.gateway,
        "reason": refund.reason,
    }
    if isinstance(refund, Refund) and refund.failure_code is not None:
        details["failure_code"] = refund.failure_code
    if actor.merchant_id is None:
        actor = actor.model_copy(update={"merchant_id": refund.merchant_id})
    return AuditEvent(
        actor=actor,
        origin=origin,
        action=action,
        resource=Resource(type="refund", id=refund.id),
        outcome=outcome,
        details=details,
    )


class RefundLifecycle:
    """Sending a refund to its gateway and recording what came back; and recovering refunds left
    open by a crash or a lost answer."""

    def __init__(
        self,
        db: Database,
        gateways: GatewayResolver,
        idempotency_config: IdempotencyConfig,
        reconciler_config: ReconcilerConfig,
    ) -> None:
        self._db = db
        self._gateways = gateways
        self._idem = idempotency_config
        self._recon = reconciler_config

    async def send(self, refund: Refund, reference: str | None) -> GatewayResult:
        configured = await self._gateways.gateway(refund.merchant_id, refund.gateway)
        if configured is None or reference is None:
            return GatewayResult(Outcome.NOT_SENT, code="gateway_not_configured")
        call = configured.gateway.refund(reference, refund.amount, refund.currency, refund.id)
        return await call_once(call, configured.timeout, NO_ANSWER)

    async def record(
        self, refund: Refund, result: GatewayResult, actor: Actor, origin: Origin, request_id: str, key: str | None
    ) -> Reply:
        """Apply the gateway's answer to ``refund``: its new state, its count on the charge, the
        stored reply and the audit event, in one statement."""
        updated = refund_after(refund, result)
        answer = reply_for(updated, request_id)
        final = updated.status in FINAL_STATUSES
        events = []
        if final:
            outcome: AuditOutcome = "success" if updated.status == "succeeded" else "failure"
            events.append(refund_event(actor, origin, updated, f"refund.{updated.status}", outcome))
        async with self._db.transaction() as tx:
            if final and key is None:  # the resolver: store the answer for the key whose request died
                key = await keys.in_progress_key_for(tx, refund.merchant_id, refund.id)
            moved = await repo.close_refund(
                tx,
                updated,
                expected_status=refund.status,
                key=key,
                reply_status=answer.status,
                reply_body=answer.body,
                audit=outbox_params(events, conditional=True),
            )
            if moved is None:  # finished meanwhile by a concurrent resend of the same refund
                current = await repo.get_refund(tx, refund.merchant_id, refund.id) or refund
                answer = reply_for(current, request_id)
                updated = current
                if key is not None and current.status in FINAL_STATUSES:
                    await keys.complete(tx, refund.merchant_id, key, status=answer.status, body=answer.body,
                                        object_id=refund.id)  # fmt: skip
        log.info("refund %s of charge %s: %s", refund.id, refund.charge_id, updated.status)
        return answer

    async def resolve_once(self, *, limit: int = 100) -> list[Refund]:
        """Send again every refund whose request died (``pending`` past the idempotency stale window)
        or whose answer was lost (``processing``); the same idempotency key makes this safe."""
        now = datetime.now(UTC)
        async with self._db.transaction() as tx:
            due = await repo.lease_unresolved(
                tx,
                limit=limit,
                pending_before=now - timedelta(seconds=self._idem.stale_after_seconds),
                processing_before=now - timedelta(seconds=max(1.0, self._recon.first_check_seconds)),
                lease_seconds=60.0,
            )
            references = {}
            for refund in due:
                charge = await charges_repo.get_charge(tx, refund.merchant_id, refund.charge_id)
                references[refund.id] = None if charge is None else charge.gateway_reference
        resolved = []
        for refund in due:
            if (
                await self._gateways.gateway(refund.merchant_id, refund.gateway) is None
                or references[refund.id] is None
            ):
                # It may have been sent: only its own gateway can say. Left for an operator.
                log.error("refund %s: gateway %s is not configured here; not resent", refund.id, refund.gateway)
                continue
            try:
                result = await self.send(refund, references[refund.id])
                await self.record(refund, result, RESOLVER_ACTOR, Origin(), "req_resolver", None)
            except Exception:
                log.exception("resending refund %s failed; it is retried later", refund.id)
                continue
            async with self._db.connection() as connection:
                current = await repo.get_refund(connection, refund.merchant_id, refund.id)
            if current is not None:
                resolved.append(current)
        return resolved

    async def recover_due(self) -> list[Decision]:
        """The reconciler's hook: resolve what is due, one decision per refund resolved."""
        return [Decision(refund.id, refund.charge_id, "resolved") for refund in await self.resolve_once()]

    async def settle_by_reference(self, gateway: str, reference: str, status: str) -> bool:
        """A refund the gateway reports final (a verified notification): through the same record
        as a lookup's answer."""
        async with self._db.connection() as connection:
            found = await repo.unresolved_by_reference(connection, gateway, reference)
        result = GatewayResult(Outcome.APPROVED if status == "succeeded" else Outcome.HARD_DECLINE,
                               reference=reference, code=f"notification_{status}")  # fmt: skip
        actor = Actor(user=f"gateway:{gateway}")
        for refund in found:
            await self.record(refund, result, actor, Origin(), "req_notification", None)
        return bool(found)
