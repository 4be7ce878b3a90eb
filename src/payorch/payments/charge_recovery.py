"""Recovery of charge attempts whose outcome is not known (timeouts, 5xx, crashes): looked up on their
own gateway, the answer applied through the charge lifecycle. The reconciler runs it
(``recover_due``); a verified gateway notification is applied the same way (``apply_result``).

Safe in several workers at once: attempts are leased with ``FOR UPDATE SKIP LOCKED``, every write
re-checks the state it expects, and a charge is moved under its row lock.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from payorch.audit import trail
from payorch.audit.events import Actor, AuditEvent, Origin, outbox_params, record_many
from payorch.audit.events import Outcome as AuditOutcome
from payorch.gateways.base import GatewayResult, Outcome
from payorch.gateways.registry import Configured
from payorch.orchestration.config import ReconcilerConfig
from payorch.orchestration.executor import AttemptOutcome, interpret_lookup
from payorch.orchestration.reconcile import Decision, next_check_delay
from payorch.orchestration.routing import GatewayResolver
from payorch.payments import charges as lifecycle
from payorch.payments.config import IdempotencyConfig
from payorch.payments.states import AttemptStatus, ChargeStatus, transition_attempt
from payorch.storage import attempts as attempts_repo
from payorch.storage import charges as repo
from payorch.storage.charges import Attempt, AttemptResult, Charge
from payorch.storage.database import Database
from payorch.storage.sql import Connection

log = logging.getLogger(__name__)

_OPEN_ATTEMPTS = frozenset({AttemptStatus.PENDING, AttemptStatus.UNKNOWN, AttemptStatus.REVIEW})


def _events(
    attempt: Attempt,
    decision: str,
    outcome: AuditOutcome,
    *,
    result: GatewayResult | None = None,
    status: str | None = None,
    **details: object,
) -> list[AuditEvent]:
    """A reconciler decision, and with the lookup's answer (``result``) also the attempt's outcome."""
    events = []
    if result is not None:
        events.append(
            trail.attempt_outcome(
                trail.reconciler_actor(attempt.merchant_id),
                Origin(),
                charge_id=attempt.charge_id,
                attempt_id=attempt.id,
                gateway=attempt.gateway,
                status=status or lifecycle.ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
                code=result.code,
                decline_code=result.decline_code,
                reference=result.reference,
                latency_ms=attempt.latency_ms,
            )
        )
    events.append(
        trail.reconciler_decision(
            attempt.merchant_id,
            decision=decision,
            charge_id=attempt.charge_id,
            attempt_id=attempt.id,
            gateway=attempt.gateway,
            outcome=outcome,
            **details,
        )
    )
    return events


def _found(status: AttemptStatus, result: GatewayResult, expires_at: datetime | None = None) -> AttemptResult:
    """What a lookup found; an attempt found waiting for its customer is checked at ``expires_at``."""
    return AttemptResult(
        status=status.value,
        gateway_reference=result.reference,
        raw_code=result.code,
        decline_code=result.decline_code,
        message=result.message,
        latency_ms=None,
        next_check_at=expires_at if status is AttemptStatus.REQUIRES_ACTION else None,
    )


class ChargeRecovery:
    def __init__(
        self,
        db: Database,
        gateways: GatewayResolver,
        config: ReconcilerConfig,
        idempotency_config: IdempotencyConfig,
    ) -> None:
        self._db = db
        self._gateways = gateways
        self._config = config
        self._stale_after = timedelta(seconds=idempotency_config.stale_after_seconds)

    async def recover_due(self) -> list[Decision]:
        """Look up every attempt that is due, once; return what was decided."""
        async with self._db.transaction() as tx:
            due = await attempts_repo.lease_due(
                tx,
                limit=self._config.batch_size,
                stale_before=datetime.now(UTC) - self._stale_after,
                lease_seconds=max(60.0, self._config.interval_seconds * 4),
            )
        decisions = []
        for attempt in due:
            try:
                decisions.append(await self._reconcile(attempt))
            except Exception:
                log.exception("reconciling attempt %s failed; it stays leased and is retried", attempt.id)
        return decisions

    async def apply_result(self, attempt: Attempt, result: GatewayResult, actor: Actor | None = None) -> Decision:
        """Apply what the gateway reports became of an unresolved ``attempt``, exactly as a lookup's
        answer is applied (verified inbound gateway notifications, the customer's confirm: ``actor``)."""
        async with self._db.connection() as connection:
            charge = await repo.get_charge(connection, attempt.merchant_id, attempt.charge_id)
        if charge is None:
            return Decision(attempt.id, attempt.charge_id, "skipped")
        return await self._apply(attempt, result, actor)

    async def _reconcile(self, attempt: Attempt) -> Decision:
        configured = await self._gateways.gateway(attempt.merchant_id, attempt.gateway)
        async with self._db.connection() as connection:
            charge = await repo.get_charge(connection, attempt.merchant_id, attempt.charge_id)
        if configured is None or charge is None:
            log.warning("attempt %s: gateway %s is not configured; left for review", attempt.id, attempt.gateway)
            return Decision(attempt.id, attempt.charge_id, "skipped")
        request = lifecycle.job_for(charge).request(
            attempt.id, attempt.token, attempt.gateway, request_authentication=attempt.authentication_requested
        )
        try:
            async with asyncio.timeout(configured.race_timeout):
                result = interpret_lookup(await configured.gateway.lookup(request))
        except Exception:
            log.warning("lookup of attempt %s did not answer", attempt.id)
            result = GatewayResult(Outcome.UNKNOWN, code="lookup_failed")
        if result.outcome is Outcome.UNKNOWN:
            return await self._reschedule(attempt)
        return await self._apply(attempt, result)

    async def _reschedule(self, attempt: Attempt, *, count: bool = True, why: str = "rescheduled") -> Decision:
        """Look ``attempt`` up again later (backoff), or flag it for review after ``max_checks``.

        ``count=False`` when the lookup answered but the answer could not be applied yet (the
        charge's request is still running): that is no reason to give up on the attempt.
        """
        current = AttemptStatus(attempt.status)
        async with self._db.transaction() as tx:
            if count and attempt.check_count >= self._config.max_checks:
                if current is AttemptStatus.PENDING:
                    current = transition_attempt(current, AttemptStatus.UNKNOWN)
                target = transition_attempt(current, AttemptStatus.REVIEW)
                log.error(
                    "attempt %s still unknown after %d lookups: flagged for review", attempt.id, attempt.check_count
                )
                events = _events(attempt, "review", "unknown", lookups=attempt.check_count)
                await attempts_repo.set_status(
                    tx, attempt, target.value, next_check_at=None, audit=outbox_params(events)
                )
                return Decision(attempt.id, attempt.charge_id, "review")
            delay = next_check_delay(self._config, attempt.check_count)
            if current is AttemptStatus.PENDING:
                transition_attempt(current, AttemptStatus.UNKNOWN)
            outcome: AuditOutcome = "failure" if why == "reversal_failed" else "unknown"
            events = _events(attempt, why, outcome, lookups=attempt.check_count, retry_in_seconds=delay)
            await attempts_repo.set_status(
                tx,
                attempt,
                AttemptStatus.UNKNOWN.value,
                next_check_at=datetime.now(UTC) + timedelta(seconds=delay),
                audit=outbox_params(events),
            )
        return Decision(attempt.id, attempt.charge_id, "rescheduled")

    async def _apply(self, attempt: Attempt, result: GatewayResult, actor: Actor | None = None) -> Decision:
        outcome = AttemptOutcome(attempt.id, attempt.gateway, result, attempt.latency_ms or 0)
        target = transition_attempt(AttemptStatus(attempt.status), lifecycle.ATTEMPT_STATUS_BY_OUTCOME[result.outcome])
        async with self._db.transaction() as tx:
            current = await repo.get_charge(tx, attempt.merchant_id, attempt.charge_id, for_update=True)
            if current is None:  # charges are never deleted; nothing to move if one were
                return Decision(attempt.id, attempt.charge_id, "skipped")
            running = await self._request_running(tx, current)
            status = ChargeStatus(current.status)
            open_charge = status in (ChargeStatus.PENDING, ChargeStatus.PROCESSING) or (
                # Waiting for its customer: only the attempt it is bound to can finish it.
                status is ChargeStatus.REQUIRES_ACTION and attempt.status == AttemptStatus.REQUIRES_ACTION.value
            )
            late_success = result.outcome is Outcome.APPROVED and not open_charge
            late_success = late_success and current.gateway_reference != result.reference
            if not running and not late_success:
                expires_at = datetime.now(UTC) + timedelta(minutes=self._config.authentication_expiry_minutes)
                await attempts_repo.record_result(tx, attempt, _found(target, result, expires_at), outbox_params([]))
                if open_charge and (result.outcome is Outcome.APPROVED or not await self._others_open(tx, attempt)):
                    who = actor or trail.reconciler_actor(current.merchant_id)
                    await lifecycle.settle(tx, current, outcome, who, request_id="req_reconciler")
                    log.info("reconciler: charge %s settled by attempt %s", current.id, attempt.id)
                events = _events(attempt, "resolved", "success", result=result, status=target.value)
                await record_many(tx, events)
                return Decision(attempt.id, attempt.charge_id, "resolved")
        if running:
            # failover_on_unknown: the request is trying the next gateway right now and will settle
            # the charge itself; applying this answer now could crown a second winner.
            return await self._reschedule(attempt, count=False)
        # A success that is not the charge's winner: the customer must not pay twice. The attempt
        # stays unknown until the reversal is confirmed, so a failed reversal is retried.
        return await self._reverse(attempt, current, result)

    async def _request_running(self, connection: Connection, charge: Charge) -> bool:
        """Whether the request that created a still-pending charge is (as far as we can tell) alive:
        its newest attempt is younger than the stale window, so it is calling that gateway right now
        and will settle the charge itself. The same window decides when a pending attempt counts as
        orphaned by a crash."""
        if ChargeStatus(charge.status) is not ChargeStatus.PENDING:
            return False
        stale_before = datetime.now(UTC) - self._stale_after
        return any(
            a.created_at > stale_before for a in await repo.list_attempts(connection, charge.merchant_id, charge.id)
        )

    @staticmethod
    async def _others_open(connection: Connection, attempt: Attempt) -> bool:
        others = await repo.list_attempts(connection, attempt.merchant_id, attempt.charge_id)
        return any(o.id != attempt.id and AttemptStatus(o.status) in _OPEN_ATTEMPTS for o in others)

    async def _reverse(self, attempt: Attempt, charge: Charge, result: GatewayResult) -> Decision:
        """Void (authorized) or refund (captured) a late success; retried with the same key until confirmed."""
        configured = await self._gateways.gateway(attempt.merchant_id, attempt.gateway)
        if configured is None or result.reference is None:
            log.error("late success of attempt %s cannot be reversed: no gateway or reference", attempt.id)
            events = _events(attempt, "reversal_failed", "failure", result=result, reason="not_reversible")
            async with self._db.transaction() as tx:
                await record_many(tx, events)
            return Decision(attempt.id, charge.id, "reversal_failed")
        reversal = await _reversal(configured, attempt.id, charge, result.reference, result.captured)
        if reversal.outcome is not Outcome.APPROVED:
            log.error("could not reverse late success of attempt %s on %s (%s): retried later",
                      attempt.id, attempt.gateway, reversal.code)  # fmt: skip
            decision = await self._reschedule(attempt, why="reversal_failed")
            return Decision(attempt.id, charge.id, "reversal_failed" if decision.action != "review" else "review")
        approved = transition_attempt(AttemptStatus(attempt.status), AttemptStatus.APPROVED)
        reversed_ = transition_attempt(approved, AttemptStatus.REVERSED)
        events = _events(attempt, "reversed", "success", result=result, status="reversed", reversal_code=reversal.code)
        async with self._db.transaction() as tx:
            await attempts_repo.record_result(tx, attempt, _found(approved, result), outbox_params([]))
            await attempts_repo.set_status(
                tx, attempt, reversed_.value, next_check_at=None, audit=outbox_params(events), expected=approved.value
            )
        log.warning("reversed late success of attempt %s on %s", attempt.id, attempt.gateway)
        return Decision(attempt.id, charge.id, "reversed")


async def _reversal(
    configured: Configured, attempt_id: str, charge: Charge, reference: str, captured: bool
) -> GatewayResult:
    """Void an authorization; refund a capture, or void it if the gateway refuses the refund.

    A captured payment that has not settled yet (Braintree's ``submitted_for_settlement``) cannot
    be refunded, only voided. Each call has its own idempotency key, so a retry repeats neither.
    """
    key = f"{attempt_id}_reversal"
    try:
        async with asyncio.timeout(configured.race_timeout):
            if not captured:
                return await configured.gateway.void(reference, key)
            refunded = await configured.gateway.refund(reference, charge.amount, charge.currency, key)
        if refunded.outcome not in (Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE):
            return refunded
        async with asyncio.timeout(configured.race_timeout):
            return await configured.gateway.void(reference, f"{key}_void")
    except Exception:
        return GatewayResult(Outcome.UNKNOWN, code="reversal_failed")
