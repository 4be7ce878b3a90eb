"""The reconciler: resolves attempts whose outcome is not known (timeouts, 5xx, crashes) against the
gateway's own books, and moves their charges through the state machine.

It is idempotent and safe to run in several workers at once: attempts are leased with
``FOR UPDATE SKIP LOCKED``; every write re-checks the state it expects.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from payorch.audit import trail
from payorch.audit.events import Origin, record_many
from payorch.audit.events import Outcome as AuditOutcome
from payorch.gateways.base import GatewayResult, Outcome, PaymentRequest
from payorch.gateways.registry import Configured, GatewayRegistry
from payorch.orchestration.executor import AttemptOutcome, interpret_lookup
from payorch.payments.service import ATTEMPT_STATUS_BY_OUTCOME, charge_fields_for, reply_for
from payorch.payments.states import AttemptStatus, ChargeStatus, transition, transition_attempt
from payorch.settings import IdempotencyConfig, ReconcilerConfig
from payorch.storage import charges as repo
from payorch.storage import idempotency as idem_repo
from payorch.storage.charges import Attempt, Charge
from payorch.storage.engine import SessionFactory, unit_of_work

log = logging.getLogger("payorch.reconciler")

MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    attempt_id: str
    charge_id: str
    action: str
    """resolved, rescheduled, review, reversed, reversal_failed, skipped"""


class Reconciler:
    def __init__(
        self,
        sessions: SessionFactory,
        registry: GatewayRegistry,
        config: ReconcilerConfig,
        idempotency_config: IdempotencyConfig,
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._config = config
        self._idem = idempotency_config

    async def run_once(self) -> list[Decision]:
        """Look up every attempt that is due once; return what was decided."""
        stale_before = datetime.now(UTC) - timedelta(seconds=self._idem.stale_after_seconds)
        async with unit_of_work(self._sessions) as session:
            due = await repo.lease_due_attempts(
                session,
                limit=self._config.batch_size,
                stale_before=stale_before,
                lease_seconds=max(60.0, self._config.interval_seconds * 4),
            )
        decisions = []
        for attempt in due:
            try:
                decisions.append(await self._reconcile(attempt))
            except Exception:
                log.exception("reconciling attempt %s failed; it stays leased and is retried", attempt.id)
        return decisions

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:
                log.exception("reconciler round failed")
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._config.interval_seconds)
            except TimeoutError:
                pass

    async def _reconcile(self, attempt: Attempt) -> Decision:
        configured = self._registry.get(attempt.gateway)
        async with unit_of_work(self._sessions) as session:
            charge = await repo.get_charge(session, attempt.merchant_id, attempt.charge_id)
        if configured is None or charge is None:
            log.warning("attempt %s: gateway %s is not configured; left for review", attempt.id, attempt.gateway)
            return Decision(attempt.id, attempt.charge_id, "skipped")
        request = PaymentRequest(
            attempt_id=attempt.id,
            merchant_id=attempt.merchant_id,
            charge_id=attempt.charge_id,
            amount=charge.amount,
            currency=charge.currency,
            token=attempt.token,
            capture=charge.capture,
            description=charge.description,
        )
        try:
            async with asyncio.timeout(configured.race_timeout):
                result = interpret_lookup(await configured.gateway.lookup(request))
        except Exception:
            log.warning("lookup of attempt %s did not answer", attempt.id)
            result = GatewayResult(Outcome.UNKNOWN, code="lookup_failed")
        if result.outcome is Outcome.UNKNOWN:
            return await self._reschedule(attempt)
        return await self._apply(attempt, charge, result)

    async def _reschedule(self, attempt: Attempt, *, count: bool = True, why: str = "rescheduled") -> Decision:
        """Look ``attempt`` up again later (backoff), or flag it for review after ``max_checks``.

        ``count=False`` when the lookup answered but the answer could not be applied yet (the
        charge's request is still running): that is no reason to give up on the attempt.
        """
        async with unit_of_work(self._sessions) as session:
            if count and attempt.check_count >= self._config.max_checks:
                current = AttemptStatus(attempt.status)
                if current is AttemptStatus.PENDING:
                    current = transition_attempt(current, AttemptStatus.UNKNOWN)
                target = transition_attempt(current, AttemptStatus.REVIEW)
                await repo.update_attempt(
                    session,
                    attempt.merchant_id,
                    attempt.id,
                    expected_status=attempt.status,
                    status=target.value,
                    next_check_at=None,
                )
                log.error(
                    "attempt %s still unknown after %d lookups: flagged for review", attempt.id, attempt.check_count
                )
                await _audit(session, attempt, "review", "unknown", lookups=attempt.check_count)
                return Decision(attempt.id, attempt.charge_id, "review")
            delay = min(MAX_BACKOFF_SECONDS, self._config.first_check_seconds * 2**attempt.check_count)
            if attempt.status == AttemptStatus.PENDING:
                transition_attempt(AttemptStatus.PENDING, AttemptStatus.UNKNOWN)
            await repo.update_attempt(
                session,
                attempt.merchant_id,
                attempt.id,
                expected_status=attempt.status,
                status=AttemptStatus.UNKNOWN.value,
                next_check_at=datetime.now(UTC) + timedelta(seconds=max(delay, 1.0)),
            )
            outcome: AuditOutcome = "failure" if why == "reversal_failed" else "unknown"
            await _audit(session, attempt, why, outcome, lookups=attempt.check_count, retry_in_seconds=max(delay, 1.0))
        return Decision(attempt.id, attempt.charge_id, "rescheduled")

    async def _request_running(self, session: AsyncSession, charge: Charge) -> bool:
        """Whether the request that created a still-pending charge is (as far as we can tell) alive.

        Its newest attempt is younger than the stale window: the request is calling that gateway
        right now (failover_on_unknown) and will settle the charge itself. The same window decides
        when a pending attempt counts as orphaned by a crash.
        """
        if ChargeStatus(charge.status) is not ChargeStatus.PENDING:
            return False
        stale_before = datetime.now(UTC) - timedelta(seconds=self._idem.stale_after_seconds)
        attempts = await repo.list_attempts(session, charge.merchant_id, charge.id)
        return any(a.created_at > stale_before for a in attempts)

    async def apply_result(self, attempt: Attempt, result: GatewayResult) -> Decision:
        """Apply what the gateway reports became of an unresolved ``attempt``, exactly as a lookup's
        answer is applied (used for verified inbound gateway notifications)."""
        async with unit_of_work(self._sessions) as session:
            charge = await repo.get_charge(session, attempt.merchant_id, attempt.charge_id)
        if charge is None:
            return Decision(attempt.id, attempt.charge_id, "skipped")
        return await self._apply(attempt, charge, result)

    async def _apply(self, attempt: Attempt, charge: Charge, result: GatewayResult) -> Decision:
        outcome = AttemptOutcome(attempt.id, attempt.gateway, result, attempt.latency_ms or 0)
        target_attempt = transition_attempt(AttemptStatus(attempt.status), ATTEMPT_STATUS_BY_OUTCOME[result.outcome])
        async with unit_of_work(self._sessions) as session:
            current = await repo.get_charge(session, charge.merchant_id, charge.id, for_update=True)
            if current is None:  # charges are never deleted; nothing to move if one were
                return Decision(attempt.id, charge.id, "skipped")
            if await self._request_running(session, current):
                # failover_on_unknown: the request is trying the next gateway right now and will
                # settle the charge itself; applying this answer now could crown a second winner.
                running = True
            else:
                running = False
                status = ChargeStatus(current.status)
                late_success = (
                    result.outcome is Outcome.APPROVED
                    and status not in (ChargeStatus.PENDING, ChargeStatus.PROCESSING)
                    and current.gateway_reference != result.reference
                )
                if not late_success:
                    await self._record(session, attempt, target_attempt, result)
                    if status in (ChargeStatus.PENDING, ChargeStatus.PROCESSING) and (
                        result.outcome is Outcome.APPROVED or not await self._others_open(session, attempt)
                    ):
                        await self._settle_charge(session, current, outcome)
                    await _audit(session, attempt, "resolved", "success", result=result, status=target_attempt.value)
                    return Decision(attempt.id, charge.id, "resolved")
        if running:
            return await self._reschedule(attempt, count=False)
        # A success that is not the charge's winner: the customer must not pay twice. The attempt
        # stays unknown until the reversal is confirmed, so a failed reversal is retried.
        return await self._reverse(attempt, current, result)

    @staticmethod
    async def _record(session: AsyncSession, attempt: Attempt, target: AttemptStatus, result: GatewayResult) -> None:
        await repo.update_attempt(
            session,
            attempt.merchant_id,
            attempt.id,
            expected_status=attempt.status,
            status=target.value,
            gateway_reference=result.reference,
            raw_code=result.code,
            decline_code=result.decline_code,
            message=result.message,
            next_check_at=None,
        )

    @staticmethod
    async def _others_open(session: AsyncSession, attempt: Attempt) -> bool:
        others = await repo.list_attempts(session, attempt.merchant_id, attempt.charge_id)
        open_statuses = {AttemptStatus.PENDING, AttemptStatus.UNKNOWN, AttemptStatus.REVIEW}
        return any(o.id != attempt.id and AttemptStatus(o.status) in open_statuses for o in others)

    async def _settle_charge(self, session: AsyncSession, charge: Charge, outcome: AttemptOutcome) -> None:
        target, fields = charge_fields_for(outcome, charge.capture, charge.amount)
        updated = await repo.update_charge(
            session,
            charge.merchant_id,
            charge.id,
            expected_status=charge.status,
            status=transition(ChargeStatus(charge.status), target).value,
            **fields,
        )
        if updated is None:
            return
        settled = trail.charge_status(
            trail.reconciler_actor(charge.merchant_id),
            Origin(),
            charge_id=charge.id,
            status=updated.status,
            amount=updated.amount,
            currency=updated.currency,
            gateway=updated.gateway,
            failure_code=updated.failure_code,
            decline_code=updated.decline_code,
            message=updated.failure_message,
        )
        await record_many(session, [] if settled is None else [settled])
        key = await idem_repo.find_in_progress_for_charge(session, charge.merchant_id, charge.id)
        if key is not None and target is not ChargeStatus.PROCESSING:
            # The request that held the key died: store the answer its retry will replay.
            reply = reply_for(updated, request_id="req_reconciler")
            await idem_repo.complete(
                session, charge.merchant_id, key, status=reply.status, body=reply.body, charge_id=charge.id
            )
        log.info("reconciler: charge %s is now %s (attempt %s)", charge.id, target, outcome.attempt_id)

    async def _reverse(self, attempt: Attempt, charge: Charge, result: GatewayResult) -> Decision:
        """Void (authorized) or refund (captured) a late success; retried with the same key until confirmed."""
        configured = self._registry.get(attempt.gateway)
        if configured is None or result.reference is None:
            log.error("late success of attempt %s cannot be reversed: no gateway or reference", attempt.id)
            async with unit_of_work(self._sessions) as session:
                await _audit(session, attempt, "reversal_failed", "failure", result=result, reason="not_reversible")
            return Decision(attempt.id, charge.id, "reversal_failed")
        reversal = await _reversal(configured, attempt.id, charge, result.reference, result.captured)
        if reversal.outcome is not Outcome.APPROVED:
            log.error(
                "could not reverse late success of attempt %s on %s (%s): retried later",
                attempt.id,
                attempt.gateway,
                reversal.code,
            )
            decision = await self._reschedule(attempt, why="reversal_failed")
            return Decision(attempt.id, charge.id, "reversal_failed" if decision.action != "review" else "review")
        async with unit_of_work(self._sessions) as session:
            approved = transition_attempt(AttemptStatus(attempt.status), AttemptStatus.APPROVED)
            await self._record(session, attempt, approved, result)
            await repo.update_attempt(
                session,
                attempt.merchant_id,
                attempt.id,
                expected_status=approved.value,
                status=transition_attempt(approved, AttemptStatus.REVERSED).value,
            )
            await _audit(
                session, attempt, "reversed", "success", result=result, status="reversed", reversal_code=reversal.code
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


async def _audit(
    session: AsyncSession,
    attempt: Attempt,
    decision: str,
    outcome: AuditOutcome,
    *,
    result: GatewayResult | None = None,
    status: str | None = None,
    **details: object,
) -> None:
    """Record a reconciler decision in the transaction that carries it out; with the lookup's
    answer (``result``) also the attempt's outcome."""
    events = []
    if result is not None:
        events.append(
            trail.attempt_outcome(
                trail.reconciler_actor(attempt.merchant_id),
                Origin(),
                charge_id=attempt.charge_id,
                attempt_id=attempt.id,
                gateway=attempt.gateway,
                status=status or ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
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
    await record_many(session, events)
