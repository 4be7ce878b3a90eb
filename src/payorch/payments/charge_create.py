"""``POST /v1/charges`` on the operation runner: route, open, execute through the gateways, close.

Writes happen in short single statements around the gateway calls, never across them, each with its
audit events (``storage.charge_writes``):
1. open: take the idempotency key, insert the pending charge and its first pending attempt;
2. (between gateways) record an attempt's outcome and insert the next pending attempt;
3. close: record the last outcome, move the charge through the state machine, store the reply.
A crash anywhere leaves a pending attempt that the reconciler resolves against the gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from payorch.audit import trail
from payorch.audit.events import Actor, AuditEvent, Origin, outbox_params
from payorch.errors import InvalidRequest
from payorch.ids import new_id
from payorch.observability.logging import bind_charge
from payorch.orchestration.config import ReconcilerConfig
from payorch.orchestration.executor import AttemptOutcome, Execution, Executor
from payorch.orchestration.routing import Candidate, ChargeFacts, ChargeRouter, Decision, Routed
from payorch.orchestration.routing_stats import OutcomeRecorder
from payorch.payments import charges as lifecycle
from payorch.payments.card_facts import card_facts, vaulted
from payorch.payments.operations import OperationRequest, Reply, store_reply
from payorch.payments.schemas import ChargeCreate, TokensPaymentMethod
from payorch.payments.states import AttemptStatus, transition_attempt
from payorch.storage import charge_writes
from payorch.storage import charges as repo
from payorch.storage import idempotency as keys
from payorch.storage.charges import Charge, NewCharge
from payorch.storage.database import Database
from payorch.storage.idempotency import KeyExists
from payorch.storage.sql import Connection


class ChargeObserver(Protocol):
    """Told how each charge created here ended (a metrics hook: ``Metrics.charge_finished``)."""

    def charge_finished(self, gateway: str, outcome: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OpenedCharge:
    charge: Charge
    candidates: list[Candidate]
    attempt_id: str
    actor: Actor
    origin: Origin
    decision: Decision | None = None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a charge request becomes before anything is written."""

    new: NewCharge
    candidates: list[Candidate]
    attempt_id: str
    events: list[AuditEvent]
    decision: Decision


class CreateCharge:
    def __init__(
        self,
        db: Database,
        router: ChargeRouter,
        executor: Executor,
        reconciler_config: ReconcilerConfig,
        *,
        metrics: ChargeObserver | None = None,
        outcomes: OutcomeRecorder | None = None,
    ) -> None:
        self._db = db
        self._router = router
        self._outcomes = outcomes
        self._executor = executor
        self._first_check = timedelta(seconds=reconciler_config.first_check_seconds)
        self._expiry = timedelta(minutes=reconciler_config.authentication_expiry_minutes)
        self._metrics = metrics

    async def open(self, request: OperationRequest[ChargeCreate]) -> OpenedCharge | KeyExists:
        plan = await self._plan(None, request)
        first = plan.candidates[0]
        # The common case, a fresh key or none: key, charge, attempt and audit events in one statement.
        async with self._db.connection() as connection:
            opened = await charge_writes.open_charge(
                connection,
                plan.new,
                key=request.key,
                attempt_id=plan.attempt_id,
                gateway=first.name,
                token=first.token,
                audit=outbox_params(plan.events, conditional=True),
                created_at=datetime.now(UTC),
            )
        if isinstance(opened, KeyExists):
            return opened
        return OpenedCharge(opened, plan.candidates, plan.attempt_id, *_who(request), plan.decision)

    async def resume(
        self, connection: Connection, request: OperationRequest[ChargeCreate], object_id: str | None
    ) -> OpenedCharge | Reply:
        earlier = (
            None if object_id is None else await repo.get_charge(connection, request.caller.merchant_id, object_id)
        )
        if earlier is not None:
            # The request that died had created its charge: answer with it as it stands now.
            answer = lifecycle.reply_for(earlier, request.request_id)
            if lifecycle.stores_reply(earlier):
                await store_reply(connection, request, answer, earlier.id)
            return answer
        plan = await self._plan(connection, request)
        if request.key is not None:
            await keys.relock(connection, request.key.merchant_id, request.key.key, plan.new.id)
        first = plan.candidates[0]
        charge = await charge_writes.open_charge_under_key(
            connection,
            plan.new,
            attempt_id=plan.attempt_id,
            gateway=first.name,
            token=first.token,
            audit=outbox_params(plan.events),
            created_at=datetime.now(UTC),
        )
        return OpenedCharge(charge, plan.candidates, plan.attempt_id, *_who(request), plan.decision)

    async def execute(self, opened: OpenedCharge) -> Execution:
        job = lifecycle.job_for(opened.charge)
        journal = _Journal(self._db, opened, self.next_check_at)
        return await self._executor.run(job, opened.candidates, opened.attempt_id, journal)

    async def close(self, request: OperationRequest[ChargeCreate], opened: OpenedCharge, result: Execution) -> Reply:
        charge, final = opened.charge, result.final
        transition_attempt(AttemptStatus.PENDING, lifecycle.ATTEMPT_STATUS_BY_OUTCOME[final.result.outcome])
        # The charge as it will be, rendered before it is written: its reply goes in the same
        # statement as the charge, the attempt and the audit events.
        tried = len(result.earlier) + 1
        updated = lifecycle.charge_after(
            charge, final, earlier=result.earlier, every_candidate_tried=tried == len(opened.candidates)
        )
        answer = lifecycle.reply_for(updated, request.request_id)
        actor, origin = opened.actor, opened.origin
        events = [
            lifecycle.outcome_event(actor, origin, charge.id, final),
            *lifecycle.status_events(actor, origin, updated),
        ]
        async with self._db.connection() as connection:
            moved = await charge_writes.close_charge(
                connection,
                attempt_id=final.attempt_id,
                result=lifecycle.attempt_result(final, self.next_check_at(), datetime.now(UTC) + self._expiry),
                charge=updated,
                idempotency_key=request.idempotency_key if lifecycle.stores_reply(updated) else None,
                reply_status=answer.status,
                reply_body=answer.body,
                audit=outbox_params(events, conditional=[False] + [True] * (len(events) - 1)),
            )
            if moved:
                await lifecycle.remember_credential(connection, updated, final)
        if not moved:  # the reconciler got there first (the request outlived its stale window)
            updated, answer = await self._as_it_stands(request, charge)
        bind_charge(charge.id, updated.status, final.gateway)  # the request's log line names the outcome
        if self._metrics is not None:
            self._metrics.charge_finished(_label(opened.candidates, final.gateway), updated.status)
        self._note_outcomes(opened, result)
        return answer

    def _note_outcomes(self, opened: OpenedCharge, result: Execution) -> None:
        """What each attempt of a ``success_rate`` charge tells of its account, for the next ones."""
        decision = opened.decision
        if self._outcomes is None or decision is None or decision.strategy != "success_rate":
            return
        network = str(decision.details.get("network") or opened.charge.card_brand or "unknown")
        for attempt in (*result.earlier, result.final):
            self._outcomes.note(attempt.gateway, opened.charge.currency, network, attempt.result)

    def next_check_at(self) -> datetime:
        return datetime.now(UTC) + self._first_check

    async def _as_it_stands(self, request: OperationRequest[ChargeCreate], charge: Charge) -> tuple[Charge, Reply]:
        """The reply for a charge someone else moved while its request ran; a final one is stored
        for the request's key."""
        async with self._db.transaction() as tx:
            current = await repo.get_charge(tx, charge.merchant_id, charge.id) or charge
            answer = lifecycle.reply_for(current, request.request_id)
            if lifecycle.stores_reply(current):
                await store_reply(tx, request, answer, charge.id)
        return current, answer

    async def _plan(self, connection: Connection | None, request: OperationRequest[ChargeCreate]) -> _Plan:
        """Candidates, the new charge and its audit events. ``connection``: the caller's transaction,
        else a vaulted payment method is read on a connection of its own."""
        caller, params = request.caller, request.params
        charge_id = new_id("ch")
        routed, network_transaction_ids = await self._route(connection, request, charge_id)
        candidates, decision = routed.candidates, routed.decision
        new = NewCharge(
            id=charge_id,
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            amount=params.amount,
            currency=params.currency,
            capture=params.capture,
            payment_method=params.payment_method if isinstance(params.payment_method, str) else None,
            description=params.description,
            metadata=params.metadata,
            idempotency_key=request.idempotency_key,
            api_key_id=caller.key_id,
            routing=decision.record(),
            return_url=params.return_url,
            setup_future_usage=params.setup_future_usage,
            off_session=params.off_session,
            customer_presence=_presence(params, network_transaction_ids),
        )
        attempt_id = new_id("att")
        actor, origin = _who(request)
        created = trail.charge_created(
            actor,
            origin,
            charge_id=new.id,
            amount=new.amount,
            currency=new.currency,
            capture=new.capture,
            livemode=new.livemode,
            gateways=[c.name for c in candidates],
            description=new.description,
            metadata=new.metadata,
            idempotency_key=new.idempotency_key,
        )
        sent = trail.attempt_sent(
            actor, origin, charge_id=new.id, attempt_id=attempt_id, gateway=candidates[0].name, seq=1
        )
        # The audit trail carries the decision with the charge's creation.
        created = created.model_copy(update={"details": {**created.details, "routing": new.routing}})
        return _Plan(new, candidates, attempt_id, [created, sent], decision)

    async def _route(
        self, connection: Connection | None, request: OperationRequest[ChargeCreate], charge_id: str
    ) -> tuple[Routed, dict[str, str]]:
        """The accounts to try in order (and why), and the stored credential's network transaction ids."""
        params, caller = request.params, request.caller
        payment_method = params.payment_method
        network_transaction_ids: dict[str, str] = {}
        if isinstance(payment_method, TokensPaymentMethod):
            known = card_facts(payment_method)
        else:
            # A vaulted payment method: eligible on every account that holds a token for it.
            if connection is None:
                async with self._db.connection() as own:
                    stored = await vaulted(own, caller, payment_method)
            else:
                stored = await vaulted(connection, caller, payment_method)
            known = card_facts(stored)
            network_transaction_ids = stored.network_transaction_ids
        facts = ChargeFacts(
            charge_id=charge_id,
            amount=params.amount,
            currency=params.currency,
            livemode=caller.livemode,
            capture=params.capture,
            tokens=known.tokens,
            metadata=params.metadata,
            card=known.card,
        )
        routed = await self._router.route(caller.merchant_id, facts)
        if not routed.candidates:
            raise InvalidRequest(
                "No configured gateway routes this currency with the given tokens.",
                param=known.param,
                code="no_eligible_gateway",
            )
        return routed, network_transaction_ids


def _label(candidates: list[Candidate], key: str) -> str:
    """The metrics label of the account that decided: a merchant's own accounts share one per kind."""
    return next((c.configured.label for c in candidates if c.name == key), key)


def _presence(params: ChargeCreate, network_transaction_ids: dict[str, str]) -> dict[str, Any] | None:
    """What is passed through to the gateways besides the columns (kept so a lookup replays the
    very same request)."""
    presence = {
        "browser_info": params.browser_info,
        "authentication_data": params.authentication_data,
        "network_transaction_ids": network_transaction_ids if params.off_session else None,
    }
    kept = {name: value for name, value in presence.items() if value}
    return kept or None


def _who(request: OperationRequest[ChargeCreate]) -> tuple[Actor, Origin]:
    return request.caller.actor(), request.caller.origin()


@dataclass(frozen=True, slots=True)
class _Journal:
    """Records each failed attempt and opens the next, as the executor fails over."""

    db: Database
    opened: OpenedCharge
    next_check_at: Callable[[], datetime]

    async def next_attempt(
        self, previous: AttemptOutcome, candidate: Candidate, seq: int, *, authentication_requested: bool = False
    ) -> str:
        attempt_id = new_id("att")
        transition_attempt(AttemptStatus.PENDING, lifecycle.ATTEMPT_STATUS_BY_OUTCOME[previous.result.outcome])
        charge = self.opened.charge
        actor, origin = self.opened.actor, self.opened.origin
        sent = trail.attempt_sent(
            actor, origin, charge_id=charge.id, attempt_id=attempt_id, gateway=candidate.name, seq=seq
        )
        events = [lifecycle.outcome_event(actor, origin, charge.id, previous), sent]
        # One statement: the failed attempt's result, the next pending attempt and both audit events.
        async with self.db.connection() as connection:
            await charge_writes.advance_attempt(
                connection,
                charge.merchant_id,
                attempt_id=previous.attempt_id,
                result=lifecycle.attempt_result(previous, self.next_check_at()),
                charge_id=charge.id,
                next_attempt_id=attempt_id,
                seq=seq,
                gateway=candidate.name,
                token=candidate.token,
                audit=outbox_params(events),
                authentication_requested=authentication_requested,
            )
        return attempt_id
