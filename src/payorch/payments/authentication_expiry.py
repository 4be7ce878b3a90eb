"""Expiry of customer authentications nobody finished (the reconciler runs it: ``recover_due``).

A ``requires_action`` attempt's ``next_check_at`` is its expiry. When it is due:

1. the gateway it is bound to is asked where the payment stands, so a customer who completed late
   (and whose confirm or notification never arrived) still wins: the answer is applied as any
   lookup's (``ChargeRecovery.apply_result``);
2. otherwise the payment is voided at the gateway, so nothing can be completed or captured after
   payorch gave up on it, and the charge becomes ``canceled`` (``authentication_expired``);
3. a void the gateway refuses (the customer completed between 1 and 2, and the payment was
   captured) sends it back to 1; a void whose answer was lost is retried on the next round.

Safe in several workers at once: attempts are leased with ``FOR UPDATE SKIP LOCKED`` and the charge
is moved under its row lock only from ``requires_action``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from payorch.audit import trail
from payorch.audit.events import outbox_params, record_many
from payorch.gateways.base import GatewayResult, Outcome
from payorch.gateways.registry import Configured
from payorch.orchestration.config import ReconcilerConfig
from payorch.orchestration.executor import NO_ANSWER, call_once, interpret_lookup
from payorch.orchestration.reconcile import Decision, next_check_delay
from payorch.orchestration.routing import GatewayResolver
from payorch.payments import charges as lifecycle
from payorch.payments.charge_recovery import ChargeRecovery
from payorch.payments.states import AttemptStatus, transition_attempt
from payorch.storage import attempts as attempts_repo
from payorch.storage import charges as repo
from payorch.storage.charges import Attempt, AttemptResult, Charge
from payorch.storage.database import Database

log = logging.getLogger(__name__)

_FINISHED = frozenset({Outcome.APPROVED, Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE})


class AuthenticationExpiry:
    def __init__(
        self, db: Database, gateways: GatewayResolver, config: ReconcilerConfig, recovery: ChargeRecovery
    ) -> None:
        self._db = db
        self._gateways = gateways
        self._config = config
        self._recovery = recovery

    async def recover_due(self) -> list[Decision]:
        async with self._db.transaction() as tx:
            due = await attempts_repo.lease_expired_authentications(
                tx, limit=self._config.batch_size, lease_seconds=max(60.0, self._config.interval_seconds * 4)
            )
        decisions = []
        for attempt in due:
            try:
                decisions.append(await self._expire(attempt))
            except Exception:
                log.exception("expiring the authentication of attempt %s failed; retried", attempt.id)
        return decisions

    async def _expire(self, attempt: Attempt) -> Decision:
        configured = await self._gateways.gateway(attempt.merchant_id, attempt.gateway)
        async with self._db.connection() as connection:
            charge = await repo.get_charge(connection, attempt.merchant_id, attempt.charge_id)
        if charge is None:
            return Decision(attempt.id, attempt.charge_id, "skipped")
        if configured is None or charge.gateway_reference is None:
            return await self._cancel(attempt, charge, "not_reversible")
        standing = await self._ask(configured, attempt, charge)
        if standing.outcome in _FINISHED:
            return await self._recovery.apply_result(attempt, standing)  # a late completion wins
        void = configured.gateway.void(charge.gateway_reference, f"{attempt.id}_expiry")
        voided = await call_once(void, configured.race_timeout, NO_ANSWER)
        if voided.outcome is Outcome.APPROVED:
            return await self._cancel(attempt, charge, voided.code)
        if voided.outcome in (Outcome.HARD_DECLINE, Outcome.SOFT_DECLINE) or voided.request_refused:
            # The gateway will not release it (refused, or "not in a state to cancel"): the
            # customer completed meanwhile. Ask again.
            again = await self._ask(configured, attempt, charge)
            if again.outcome in _FINISHED:
                return await self._recovery.apply_result(attempt, again)
        log.warning("authentication of attempt %s expired but could not be voided yet (%s)", attempt.id, voided.code)
        return await self._retry_later(attempt)

    async def _ask(self, configured: Configured, attempt: Attempt, charge: Charge) -> GatewayResult:
        request = lifecycle.job_for(charge).request(
            attempt.id, attempt.token, attempt.gateway, request_authentication=attempt.authentication_requested
        )
        reference = charge.gateway_reference or ""
        asked = configured.gateway.complete_authentication(request, reference, {})
        return interpret_lookup(await call_once(asked, configured.race_timeout, NO_ANSWER))

    async def _cancel(self, attempt: Attempt, charge: Charge, void_code: str | None) -> Decision:
        result = AttemptResult(
            status=transition_attempt(AttemptStatus(attempt.status), AttemptStatus.DECLINED).value,
            gateway_reference=charge.gateway_reference,
            raw_code="authentication_expired",
            decline_code="authentication_expired",
            message="The customer did not authenticate in time; the payment was voided.",
            latency_ms=None,
            next_check_at=None,
        )
        actor = trail.reconciler_actor(charge.merchant_id)
        async with self._db.transaction() as tx:
            current = await repo.get_charge(tx, charge.merchant_id, charge.id, for_update=True)
            if current is None or not lifecycle.awaits_customer(current):
                return Decision(attempt.id, charge.id, "skipped")
            await attempts_repo.record_result(tx, attempt, result, outbox_params([]))
            await lifecycle.settle_as(
                tx, current, lifecycle.charge_expired(current), actor, request_id="req_reconciler"
            )
            await record_many(
                tx,
                [
                    trail.reconciler_decision(
                        charge.merchant_id,
                        decision="authentication_expired",
                        charge_id=charge.id,
                        attempt_id=attempt.id,
                        gateway=attempt.gateway,
                        outcome="success",
                        void_code=void_code,
                    )
                ],
            )
        log.info("charge %s: authentication expired, canceled", charge.id)
        return Decision(attempt.id, charge.id, "expired")

    async def _retry_later(self, attempt: Attempt) -> Decision:
        delay = next_check_delay(self._config, attempt.check_count)
        async with self._db.connection() as connection:
            await attempts_repo.set_status(
                connection,
                attempt,
                attempt.status,
                next_check_at=datetime.now(UTC) + timedelta(seconds=delay),
                audit=outbox_params([]),
            )
        return Decision(attempt.id, attempt.charge_id, "rescheduled")
