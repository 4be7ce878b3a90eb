"""Runs a charge through its candidate gateways: one at a time, each raced against its own timeout,
the whole against a deadline, failing over only where no customer can be charged twice.

=================  =============================================  ==================================
outcome            meaning                                        next
=================  =============================================  ==================================
approved           charged or authorized                          stop
hard decline       the card said no                               stop, never fail over
soft decline       the issuer said no for now                     stop unless configured cascadable
not sent           provably never executed                        next gateway
unknown            it may have charged                            look it up on the same gateway;
                                                                  still unknown -> stop (processing)
action required    the customer must authenticate at this gateway stop: the charge is bound to it
=================  =============================================  ==================================

An ``authentication_required`` soft decline is retried once on the same gateway asking for a
challenge when ``sca_retry`` is on (and the customer is present).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

from payorch.gateways.base import CustomerPresence, GatewayResult, Outcome, PaymentRequest, VaultResult
from payorch.orchestration.config import RoutingConfig
from payorch.orchestration.routing import Candidate

log = logging.getLogger(__name__)

LOOKUP_PAUSE_SECONDS = 0.2


def interpret_lookup(found: GatewayResult) -> GatewayResult:
    """What a lookup's answer means for the attempt it looked up.

    Stripe maps a ``canceled`` PaymentIntent to APPROVED (code ``canceled``): the right reading of a
    void's answer. On a lookup it means the authorization existed and has since been released, so
    the attempt holds no money: it must neither win the charge nor be reversed again.
    """
    if found.outcome is Outcome.APPROVED and found.code == "canceled" and not found.captured:
        return GatewayResult(
            Outcome.HARD_DECLINE,
            found.reference,
            code="canceled",
            decline_code="canceled",
            message="The authorization was released at the gateway.",
            card=found.card,
        )
    return found


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    attempt_id: str
    gateway: str
    result: GatewayResult
    latency_ms: int


class Journal(Protocol):
    async def next_attempt(
        self, previous: AttemptOutcome, candidate: Candidate, seq: int, *, authentication_requested: bool = False
    ) -> str:
        """Record ``previous``'s outcome and write the next pending attempt; return its id."""
        ...


class Breakers(Protocol):
    def allows(self, gateway: str) -> bool: ...

    def record(self, gateway: str, outcome: Outcome, seconds: float, *, refused: bool = False) -> None: ...


class NoBreakers:
    """Every gateway always allowed: for single-gateway set-ups and tests of the executor alone."""

    def allows(self, gateway: str) -> bool:  # noqa: ARG002 - every gateway is allowed
        return True

    def record(self, *_: object, **__: object) -> None:
        """Nothing to keep."""
        return None


class AttemptObserver(Protocol):
    """Told about every gateway call made (a metrics hook: ``Metrics.attempt``)."""

    def attempt(self, gateway: str, outcome: str, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class ChargeJob:
    merchant_id: str
    charge_id: str
    amount: int
    currency: str
    capture: bool
    description: str | None
    presence: CustomerPresence = field(default_factory=CustomerPresence)
    network_transaction_ids: dict[str, str] = field(default_factory=dict)
    """By gateway: the stored credential's network transaction id (merchant-initiated charges)."""

    def request(
        self, attempt_id: str, token: str, gateway: str | None = None, *, request_authentication: bool = False
    ) -> PaymentRequest:
        """What ``gateway`` is asked for one attempt; the same for its replay in a lookup."""
        presence = self.presence
        network_transaction_id = self.network_transaction_ids.get(gateway or "") if presence.off_session else None
        if network_transaction_id is not None or request_authentication:
            presence = replace(
                presence, network_transaction_id=network_transaction_id, request_authentication=request_authentication
            )
        return PaymentRequest(
            attempt_id=attempt_id,
            merchant_id=self.merchant_id,
            charge_id=self.charge_id,
            amount=self.amount,
            currency=self.currency,
            token=token,
            capture=self.capture,
            description=self.description,
            presence=presence,
        )


@dataclass(frozen=True, slots=True)
class Execution:
    final: AttemptOutcome
    """The last attempt, whose result decides the charge (recorded by the caller with the charge)."""
    earlier: tuple[AttemptOutcome, ...]
    """Attempts already recorded through the journal."""


class Executor:
    def __init__(
        self, config: RoutingConfig, breakers: Breakers | None = None, *, observer: AttemptObserver | None = None
    ) -> None:
        self._config = config
        self._breakers: Breakers = breakers or NoBreakers()
        self._observer = observer

    async def run(
        self, job: ChargeJob, candidates: list[Candidate], first_attempt_id: str, journal: Journal
    ) -> Execution:
        deadline = time.monotonic() + self._config.deadline_ms / 1000
        attempt_id = first_attempt_id
        earlier: list[AttemptOutcome] = []
        seq = 1
        for index, candidate in enumerate(candidates):
            outcome = await self._attempt(job, candidate, attempt_id, deadline)
            if self._wants_sca_retry(job, candidate, outcome.result) and time.monotonic() < deadline:
                earlier.append(outcome)
                seq += 1
                attempt_id = await journal.next_attempt(outcome, candidate, seq, authentication_requested=True)
                outcome = await self._attempt(job, candidate, attempt_id, deadline, request_authentication=True)
            is_last = index == len(candidates) - 1
            if is_last or not self._may_fail_over(outcome.result) or time.monotonic() >= deadline:
                return Execution(final=outcome, earlier=tuple(earlier))
            earlier.append(outcome)
            seq += 1
            attempt_id = await journal.next_attempt(outcome, candidates[index + 1], seq)
        raise ValueError("a charge needs at least one candidate gateway")

    def _wants_sca_retry(self, job: ChargeJob, candidate: Candidate, result: GatewayResult) -> bool:
        return (
            self._config.sca_retry
            and result.outcome is Outcome.SOFT_DECLINE
            and result.decline_code == "authentication_required"
            and not job.presence.off_session
            and candidate.configured.capabilities.customer_authentication
        )

    def _may_fail_over(self, result: GatewayResult) -> bool:
        # ACTION_REQUIRED never fails over: the customer is being sent to authenticate at this
        # gateway, and the charge is bound to it from now on.
        if result.outcome is Outcome.NOT_SENT:
            return True
        if result.outcome is Outcome.SOFT_DECLINE:
            return (result.decline_code or "") in self._config.cascadable_soft_declines
        if result.outcome is Outcome.UNKNOWN:
            # Only where the operator opted in; the reconciler then reverses a losing late success.
            return self._config.failover_on_unknown
        return False

    async def _attempt(
        self,
        job: ChargeJob,
        candidate: Candidate,
        attempt_id: str,
        deadline: float,
        *,
        request_authentication: bool = False,
    ) -> AttemptOutcome:
        request = job.request(
            attempt_id, candidate.token, candidate.name, request_authentication=request_authentication
        )
        gateway = candidate.configured.gateway
        started = time.monotonic()
        if not self._breakers.allows(candidate.name):
            result = GatewayResult(Outcome.NOT_SENT, code="breaker_open", message="Circuit breaker open.")
            return AttemptOutcome(attempt_id, candidate.name, result, 0)
        result = await _race(gateway.authorize(request), candidate.configured.race_timeout, deadline)
        elapsed = time.monotonic() - started
        self._breakers.record(candidate.name, result.outcome, elapsed, refused=result.request_refused)
        if result.outcome is Outcome.UNKNOWN:
            result = await self._resolve(candidate, request, deadline, result)
        elapsed = time.monotonic() - started
        if self._observer is not None:
            self._observer.attempt(candidate.configured.label, result.outcome.value, elapsed)
        return AttemptOutcome(attempt_id, candidate.name, result, round(elapsed * 1000))

    async def _resolve(
        self, candidate: Candidate, request: PaymentRequest, deadline: float, unknown: GatewayResult
    ) -> GatewayResult:
        """Ask the same gateway what became of the attempt, while the deadline allows."""
        gateway = candidate.configured.gateway
        for _ in range(2):
            if time.monotonic() + LOOKUP_PAUSE_SECONDS >= deadline:
                break
            found = await _race(gateway.lookup(request), candidate.configured.race_timeout, deadline)
            if found.outcome is not Outcome.UNKNOWN:
                return interpret_lookup(found)
            await asyncio.sleep(LOOKUP_PAUSE_SECONDS)
        return unknown


async def _race(call: Awaitable[GatewayResult], limit: float, deadline: float) -> GatewayResult:
    """Run a gateway call against its timeout and the request's deadline; never raise."""
    budget = max(0.0, min(limit, deadline - time.monotonic()))
    try:
        async with asyncio.timeout(budget):
            return await call
    except TimeoutError:
        return GatewayResult(Outcome.UNKNOWN, code="timeout", message="No answer before the timeout.")
    except Exception:
        # An adapter must not raise; if one does, money may have moved: treat as unknown.
        log.exception("gateway call raised")
        return GatewayResult(Outcome.UNKNOWN, code="adapter_error", message="The gateway adapter failed.")


R = TypeVar("R", GatewayResult, VaultResult)

NO_ANSWER = GatewayResult(Outcome.UNKNOWN, code="timeout", message="No answer from the gateway before the timeout.")


async def call_once(call: Awaitable[R], seconds: float, unknown: R) -> R:
    """A follow-up operation at the gateway that holds the money (capture, void, refund, vault):
    one call, raced against ``seconds``, never raising, never failing over. ``unknown`` if it did
    not answer in time or raised (an adapter must not raise; if one does, it may have happened)."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        return unknown
    except Exception:
        log.exception("gateway call raised")
        return unknown
