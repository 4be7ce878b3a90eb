"""The charge lifecycle: create (route, execute, record), read and list.

Writes happen in three short transactions around the gateway calls, never across them, each a single
statement with its audit events (``storage.charges``: ``open_charge``, ``advance_attempt``,
``close_charge``):
1. take the idempotency key, insert the pending charge and its first pending attempt;
2. (between gateways) record an attempt's outcome and insert the next pending attempt;
3. record the last outcome, move the charge through the state machine, store the idempotent reply.
A crash anywhere leaves a pending attempt that the reconciler resolves against the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from payorch import jsontext
from payorch.audit import trail
from payorch.audit.events import AuditEvent, outbox_columns, record_many
from payorch.errors import ApiError, CardDeclined, InvalidRequest, NoGatewayAvailable, NotFound
from payorch.gateways.base import Outcome
from payorch.ids import new_id
from payorch.observability.logging import bind_charge
from payorch.orchestration.executor import AttemptOutcome, ChargeJob, Execution, Executor
from payorch.orchestration.routing import Candidate, Router
from payorch.payments import idempotency
from payorch.payments.schemas import ChargeCreate, TokensPaymentMethod, render_charge
from payorch.payments.states import AttemptStatus, ChargeStatus, transition, transition_attempt
from payorch.security.api_keys import Caller
from payorch.settings import IdempotencyConfig, ReconcilerConfig
from payorch.storage import charges as repo
from payorch.storage import idempotency as idem_repo
from payorch.storage import payment_methods as payment_methods_repo
from payorch.storage.charges import AttemptResult, Charge, NewCharge
from payorch.storage.engine import SessionFactory, driver_connection, unit_of_work
from payorch.storage.idempotency import IdempotencyRecord

ATTEMPT_STATUS_BY_OUTCOME = {
    Outcome.APPROVED: AttemptStatus.APPROVED,
    Outcome.HARD_DECLINE: AttemptStatus.DECLINED,
    Outcome.SOFT_DECLINE: AttemptStatus.DECLINED,
    Outcome.NOT_SENT: AttemptStatus.NOT_SENT,
    Outcome.UNKNOWN: AttemptStatus.UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer as stored for idempotent replay: status and exact body bytes."""

    status: int
    body: bytes
    replayed: bool = False


def reply_for(charge: Charge, request_id: str) -> Reply:
    """The answer a charge in its current state gets (DESIGN.md section 4)."""
    status = ChargeStatus(charge.status)
    if status in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED, ChargeStatus.CANCELED):
        return Reply(201, jsontext.dumps(render_charge(charge)))
    if status in (ChargeStatus.PENDING, ChargeStatus.PROCESSING):
        return Reply(202, jsontext.dumps(render_charge(charge)))
    error: ApiError
    if charge.failure_code == "gateway_unavailable":
        error = NoGatewayAvailable(charge.failure_message or "No gateway could take the charge.", charge=charge.id)
    else:
        error = CardDeclined(
            charge.failure_message or "The card was declined.", decline_code=charge.decline_code, charge=charge.id
        )
    return Reply(error.status, jsontext.dumps(error.body(request_id)))


def _attempt_result(outcome: AttemptOutcome, next_check_at: datetime | None) -> AttemptResult:
    result = outcome.result
    return AttemptResult(
        status=ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
        gateway_reference=result.reference,
        raw_code=result.code,
        decline_code=result.decline_code,
        message=result.message,
        latency_ms=outcome.latency_ms,
        next_check_at=next_check_at if result.outcome is Outcome.UNKNOWN else None,
    )


def charge_fields_for(outcome: AttemptOutcome, capture: bool, amount: int) -> tuple[ChargeStatus, dict[str, Any]]:
    """The charge status and columns an attempt's result leads to."""
    result = outcome.result
    fields: dict[str, Any] = {}
    if result.card is not None:
        fields.update(
            card_brand=result.card.brand,
            card_last4=result.card.last4,
            card_exp_month=result.card.exp_month,
            card_exp_year=result.card.exp_year,
        )
    if result.outcome is Outcome.APPROVED:
        fields.update(
            gateway=outcome.gateway, gateway_reference=result.reference, amount_captured=amount if capture else 0
        )
        return (ChargeStatus.SUCCEEDED if capture else ChargeStatus.AUTHORIZED), fields
    if result.outcome is Outcome.UNKNOWN:
        return ChargeStatus.PROCESSING, fields
    if result.outcome is Outcome.NOT_SENT:
        fields.update(failure_code="gateway_unavailable", failure_message="No gateway could take the charge.")
        return ChargeStatus.FAILED, fields
    fields.update(
        failure_code="card_declined",
        decline_code=result.decline_code or "generic_decline",
        failure_message=result.message or "The card was declined.",
    )
    return ChargeStatus.FAILED, fields


class ChargeObserver(Protocol):
    """Told how each charge created here ended (a metrics hook: ``Metrics.charge_finished``)."""

    def charge_finished(self, gateway: str, outcome: str) -> None: ...


class ChargeService:
    def __init__(
        self,
        sessions: SessionFactory,
        router: Router,
        executor: Executor,
        idempotency_config: IdempotencyConfig,
        reconciler_config: ReconcilerConfig,
        *,
        metrics: ChargeObserver | None = None,
    ) -> None:
        self._metrics = metrics
        self._sessions = sessions
        self._router = router
        self._executor = executor
        self._idem = idempotency_config
        self._recon = reconciler_config

    @property
    def sessions(self) -> SessionFactory:
        return self._sessions

    async def _candidates(self, caller: Caller, params: ChargeCreate) -> list[Candidate]:
        if isinstance(params.payment_method, TokensPaymentMethod):
            tokens = params.payment_method.tokens
            param = "payment_method.tokens"
            unknown = self._router.unknown_gateways(tokens)
            if unknown:
                raise InvalidRequest(
                    f"No gateway named '{unknown[0]}' is configured.",
                    param=f"payment_method.tokens.{unknown[0]}",
                    code="gateway_not_configured",
                )
        else:
            # A vaulted payment method: eligible on every configured gateway that holds a token for it.
            tokens, param = await self._vaulted_tokens(caller, params.payment_method), "payment_method"
        candidates = self._router.candidates(params.currency, tokens)
        if not candidates:
            raise InvalidRequest(
                "No configured gateway routes this currency with the given tokens.",
                param=param,
                code="no_eligible_gateway",
            )
        return candidates

    async def _vaulted_tokens(self, caller: Caller, payment_method_id: str) -> dict[str, str]:
        async with unit_of_work(self._sessions) as session:
            payment_method = await payment_methods_repo.get_payment_method(
                session, caller.merchant_id, payment_method_id, livemode=caller.livemode
            )
        if payment_method is None:  # unknown, or another merchant's or mode's: the same answer
            raise InvalidRequest(
                f"No such payment_method: '{payment_method_id}'.", param="payment_method", code="resource_missing"
            )
        return payment_method.tokens

    async def create(
        self,
        caller: Caller,
        params: ChargeCreate,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: Any,
        path: str,
    ) -> Reply:
        """Create a charge and run it through its gateways; the reply is what the API answers."""
        candidates = await self._candidates(caller, params)
        charge_id, attempt_id = new_id("ch"), new_id("att")
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
            idempotency_key=idempotency_key,
            api_key_id=caller.key_id,
        )
        print_ = idempotency.fingerprint("POST", path, raw_body, caller.livemode)
        first = candidates[0]
        created_events = _created_events(caller, new, candidates, attempt_id, idempotency_key)
        # The common case, a fresh key or none: key, charge, attempt and audit events in one statement.
        async with driver_connection(self._sessions) as connection:
            opened = await repo.open_charge(
                connection, new, attempt_id=attempt_id, gateway=first.name, token=first.token,
                fingerprint=print_ if idempotency_key is not None else None, method="POST", path=path,
                audit=outbox_columns(created_events), created_at=datetime.now(UTC),
            )  # fmt: skip
        if isinstance(opened, IdempotencyRecord):  # the key exists: a replay, or refused (400, 409)
            verdict = idempotency.judge(opened, print_, stale_after_seconds=self._idem.stale_after_seconds)
            if isinstance(verdict, idempotency.StoredReply):
                return Reply(verdict.status, verdict.body, replayed=True)
            opened = None  # abandoned by a request that died: taken over below, under a lock
        if opened is None:  # the key exists: replay, refuse, or take over an abandoned one
            if idempotency_key is None:
                raise RuntimeError("open_charge wrote nothing for a charge without an idempotency key")
            async with unit_of_work(self._sessions) as session:
                earlier = await self._take_key(session, caller, idempotency_key, print_, path, request_id, charge_id)
                if earlier is not None:
                    return earlier
                charge, _ = await repo.insert_charge_with_attempt(
                    session, new, attempt_id=attempt_id, gateway=first.name, token=first.token
                )
                await record_many(session, created_events)
        else:
            charge = opened
        job = ChargeJob(
            caller.merchant_id, charge_id, params.amount, params.currency, params.capture, params.description
        )
        journal = _Journal(self, caller.merchant_id, charge_id, caller)
        execution = await self._executor.run(job, candidates, attempt_id, journal)
        return await self._finish(caller, charge, execution, request_id, idempotency_key)

    async def _take_key(
        self,
        session: AsyncSession,
        caller: Caller,
        key: str,
        print_: bytes,
        path: str,
        request_id: str,
        charge_id: str,
    ) -> Reply | None:
        """Take the key for ``charge_id``, or say what a repeat gets. None means the key is ours: go on.
        (The key names its charge as it is taken: no separate UPDATE round trip to attach it.)"""
        taken = await idem_repo.try_take(
            session,
            merchant_id=caller.merchant_id,
            key=key,
            fingerprint=print_,
            method="POST",
            path=path,
            charge_id=charge_id,
        )
        if taken:
            return None
        record = await idem_repo.get(session, caller.merchant_id, key, for_update=True)
        if record is None:  # purged between the two statements: take it afresh
            await idem_repo.try_take(
                session,
                merchant_id=caller.merchant_id,
                key=key,
                fingerprint=print_,
                method="POST",
                path=path,
                charge_id=charge_id,
            )
            return None
        verdict = idempotency.judge(record, print_, stale_after_seconds=self._idem.stale_after_seconds)
        if isinstance(verdict, idempotency.StoredReply):
            return Reply(verdict.status, verdict.body, replayed=True)
        await idem_repo.relock(session, caller.merchant_id, key)
        charge = (
            None if verdict.charge_id is None else await repo.get_charge(session, caller.merchant_id, verdict.charge_id)
        )
        if charge is None:  # the request that died had created nothing: this one takes over
            await idem_repo.attach_charge(session, caller.merchant_id, key, charge_id)
            return None
        reply = reply_for(charge, request_id)
        if ChargeStatus(charge.status) not in (ChargeStatus.PENDING, ChargeStatus.PROCESSING):
            await idem_repo.complete(
                session, caller.merchant_id, key, status=reply.status, body=reply.body, charge_id=charge.id
            )
        return reply

    def next_check_at(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._recon.first_check_seconds)

    async def _finish(
        self, caller: Caller, charge: Charge, execution: Execution, request_id: str, idempotency_key: str | None
    ) -> Reply:
        final = execution.final
        target, fields = charge_fields_for(final, charge.capture, charge.amount)
        if target is ChargeStatus.FAILED and any(e.result.outcome is Outcome.UNKNOWN for e in execution.earlier):
            # An earlier attempt may still have charged (failover_on_unknown): the outcome is not known yet.
            target, fields = ChargeStatus.PROCESSING, {}
        transition_attempt(AttemptStatus.PENDING, ATTEMPT_STATUS_BY_OUTCOME[final.result.outcome])
        status = transition(ChargeStatus.PENDING, target)
        # The charge as it will be, rendered before it is written: its reply goes in the same
        # statement as the charge, the attempt and the audit events (one round trip, one transaction).
        # (Never before created_at, which another replica's clock may have set.)
        updated = replace(charge, status=status.value, updated_at=max(datetime.now(UTC), charge.created_at), **fields)
        reply = reply_for(updated, request_id)
        final_state = status not in (ChargeStatus.PENDING, ChargeStatus.PROCESSING)
        outcome_event = attempt_outcome_event(caller, charge.id, final)
        status_events = _status_events(caller, updated)
        async with driver_connection(self._sessions) as connection:
            moved = await repo.close_charge(
                connection,
                attempt_id=final.attempt_id,
                attempt=_attempt_result(final, self.next_check_at()),
                charge=updated,
                idempotency_key=idempotency_key if final_state else None,
                reply_status=reply.status,
                reply_body=reply.body,
                audit=outbox_columns([outcome_event, *status_events]),
                audit_needs_charge=[False] + [True] * len(status_events),
            )
        if not moved:  # the reconciler got there first (the request outlived its stale window)
            updated, reply = await self._answer_as_it_stands(charge, request_id, idempotency_key)
        bind_charge(charge.id, updated.status, final.gateway)  # the request's log line names the outcome
        if self._metrics is not None:
            self._metrics.charge_finished(final.gateway, updated.status)
        return reply

    async def _answer_as_it_stands(
        self, charge: Charge, request_id: str, idempotency_key: str | None
    ) -> tuple[Charge, Reply]:
        """The reply for a charge someone else moved while its request ran; a final one is stored for
        the request's idempotency key."""
        async with unit_of_work(self._sessions) as session:
            current = await repo.get_charge(session, charge.merchant_id, charge.id) or charge
            reply = reply_for(current, request_id)
            final_state = ChargeStatus(current.status) not in (ChargeStatus.PENDING, ChargeStatus.PROCESSING)
            if idempotency_key is not None and final_state:
                await idem_repo.complete(
                    session,
                    charge.merchant_id,
                    idempotency_key,
                    status=reply.status,
                    body=reply.body,
                    charge_id=charge.id,
                )
        return current, reply

    async def get(self, caller: Caller, charge_id: str) -> Charge:
        async with unit_of_work(self._sessions) as session:
            charge = await repo.get_charge(session, caller.merchant_id, charge_id, livemode=caller.livemode)
        if charge is None:
            raise NotFound(f"No such charge: '{charge_id}'", param="id")
        return charge

    async def list_page(
        self, caller: Caller, *, limit: int, starting_after: str | None, ending_before: str | None
    ) -> tuple[list[Charge], bool]:
        async with unit_of_work(self._sessions) as session:
            return await repo.list_charges(
                session,
                caller.merchant_id,
                livemode=caller.livemode,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )


def attempt_outcome_event(caller: Caller, charge_id: str, outcome: AttemptOutcome) -> AuditEvent:
    result = outcome.result
    return trail.attempt_outcome(
        caller.actor(),
        caller.origin(),
        charge_id=charge_id,
        attempt_id=outcome.attempt_id,
        gateway=outcome.gateway,
        status=ATTEMPT_STATUS_BY_OUTCOME[result.outcome].value,
        code=result.code,
        decline_code=result.decline_code,
        reference=result.reference,
        latency_ms=outcome.latency_ms,
    )


def _created_events(
    caller: Caller, charge: NewCharge, candidates: list[Candidate], attempt_id: str, idempotency_key: str | None
) -> list[AuditEvent]:
    actor, origin = caller.actor(), caller.origin()
    created = trail.charge_created(
        actor,
        origin,
        charge_id=charge.id,
        amount=charge.amount,
        currency=charge.currency,
        capture=charge.capture,
        livemode=charge.livemode,
        gateways=[c.name for c in candidates],
        description=charge.description,
        metadata=charge.metadata,
        idempotency_key=idempotency_key,
    )
    sent = trail.attempt_sent(
        actor, origin, charge_id=charge.id, attempt_id=attempt_id, gateway=candidates[0].name, seq=1
    )
    return [created, sent]


def _status_events(caller: Caller, charge: Charge) -> list[AuditEvent]:
    event = trail.charge_status(
        caller.actor(),
        caller.origin(),
        charge_id=charge.id,
        status=charge.status,
        amount=charge.amount,
        currency=charge.currency,
        gateway=charge.gateway,
        failure_code=charge.failure_code,
        decline_code=charge.decline_code,
        message=charge.failure_message,
    )
    return [] if event is None else [event]


@dataclass(frozen=True, slots=True)
class _Journal:
    service: ChargeService
    merchant_id: str
    charge_id: str
    caller: Caller

    async def next_attempt(self, previous: AttemptOutcome, candidate: Candidate, seq: int) -> str:
        attempt_id = new_id("att")
        transition_attempt(AttemptStatus.PENDING, ATTEMPT_STATUS_BY_OUTCOME[previous.result.outcome])
        actor, origin = self.caller.actor(), self.caller.origin()
        sent = trail.attempt_sent(
            actor, origin, charge_id=self.charge_id, attempt_id=attempt_id, gateway=candidate.name, seq=seq
        )
        events = [attempt_outcome_event(self.caller, self.charge_id, previous), sent]
        # One statement: the failed attempt's result, the next pending attempt and both audit events.
        async with driver_connection(self.service.sessions) as connection:
            await repo.advance_attempt(
                connection,
                self.merchant_id,
                attempt_id=previous.attempt_id,
                attempt=_attempt_result(previous, self.service.next_check_at()),
                charge_id=self.charge_id,
                next_attempt_id=attempt_id,
                seq=seq,
                gateway=candidate.name,
                token=candidate.token,
                audit=outbox_columns(events),
            )
        return attempt_id


__all__ = ["ChargeService", "Reply", "charge_fields_for", "reply_for"]
