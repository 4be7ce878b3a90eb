"""Inbound gateway notifications: verified by the gateway's own scheme (the adapter's
``parse_webhook``), deduplicated by the gateway's event id, applied through the state machine.

- ``payment.succeeded`` / ``payment.authorized`` / ``payment.failed`` for an attempt still unresolved
  (unknown, review, or waiting for its customer to authenticate) are applied by the charge
  lifecycle's recovery (``AttemptSettler``): the same
  transitions, late-success reversal and idempotent-reply completion as a lookup's answer.
- ``refund.succeeded`` / ``refund.failed`` settle a pending refund with that gateway reference.
- ``dispute.created`` raises a ``charge.disputed`` event.
- Anything else is remembered and, when it names an unresolved attempt, schedules its lookup now.

An unverifiable notification changes nothing; when its body names one of our attempt ids, that
attempt's next lookup is brought forward (a hint, never a fact).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from payorch.audit.events import Actor, AuditEvent, Resource, record
from payorch.errors import InvalidRequest, NotFound
from payorch.gateways.base import GatewayError, GatewayNotification, GatewayResult, Outcome
from payorch.gateways.registry import Configured, GatewayRegistry
from payorch.orchestration.reconcile import Decision
from payorch.storage import attempts as attempts_repo
from payorch.storage import charges as charges_repo
from payorch.storage import events as events_repo
from payorch.storage import webhooks as repo
from payorch.storage.charges import Attempt
from payorch.storage.database import Database
from payorch.storage.sql import Connection

log = logging.getLogger(__name__)

PARSE_TIMEOUT_SECONDS = 10.0
_ATTEMPT_ID = re.compile(rb"att_[0-9a-z]{26}")
_RESULTS = {
    "payment.succeeded": GatewayResult(Outcome.APPROVED, captured=True),
    "payment.authorized": GatewayResult(Outcome.APPROVED, captured=False),
    "payment.failed": GatewayResult(Outcome.HARD_DECLINE, code="payment_failed", decline_code="card_declined"),
}
_APPLICABLE = frozenset({"unknown", "review", "requires_action"})


class AttemptSettler(Protocol):
    """The charge lifecycle's recovery, applying what a gateway reports became of an attempt."""

    async def apply_result(self, attempt: Attempt, result: GatewayResult) -> Decision: ...


class RefundSettler(Protocol):
    """The refund lifecycle, settling a refund the gateway reports final."""

    async def settle_by_reference(self, gateway: str, reference: str, status: str) -> bool: ...


class NotificationAccounts(Protocol):
    """Merchants' own accounts, found by the id their notification path names."""

    async def for_notification(self, account_id: str) -> tuple[str, Configured] | None: ...


class UnverifiableNotification(InvalidRequest):
    code = "signature_verification_failed"


class UnknownGateway(NotFound):
    code = "gateway_not_found"


class UnstorableNotification(InvalidRequest):
    """Correctly signed, but a field cannot be stored: a 400, so the gateway gives up on it."""

    code = "notification_invalid"


_BIGINT = 2**63 - 1


def unstorable_field(notification: GatewayNotification) -> tuple[str, str] | None:
    """The first field taken from the notification that cannot be stored, and why."""
    if not notification.event_id or not notification.kind:
        return ("event_id" if not notification.event_id else "kind"), "is empty"
    fields = [(name, getattr(notification, name), limit) for name, limit in repo.NOTIFICATION_LIMITS.items()]
    # The names in ``extra`` are the adapter's own; their values come from the gateway.
    fields += [(f"extra.{name}", value, repo.EXTRA_VALUE_LIMIT) for name, value in notification.extra.items()]
    for name, value, limit in fields:
        why = None if value is None else repo.unstorable(value, limit)
        if why is not None:
            return name, why
    if notification.amount is not None and abs(notification.amount) > _BIGINT:
        return "amount", "is out of range"
    return None


def _check_storable(gateway: str, notification: GatewayNotification) -> None:
    """Every field taken from a notification is bounded before anything of it is stored or logged:
    one that is not storable is a 400 (so the gateway stops retrying), with nothing stored."""
    problem = unstorable_field(notification)
    if problem is not None:
        field, why = problem
        log.warning("refused a %s notification: its %s %s; nothing stored", gateway, field, why)
        raise UnstorableNotification(f"The notification's {field} {why}; it was not stored.", param=field)


@dataclass(frozen=True, slots=True)
class Received:
    event_id: str
    kind: str
    outcome: str
    """applied, duplicate, already_final, in_flight, unknown_attempt, refund_settled, disputed,
    lookup_scheduled, ignored"""


class InboundService:
    def __init__(
        self,
        db: Database,
        registry: GatewayRegistry,
        attempts: AttemptSettler,
        refunds: RefundSettler,
        accounts: NotificationAccounts | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        self._attempts = attempts
        self._refunds = refunds
        self._accounts = accounts

    async def _configured(self, gateway: str) -> Configured | None:
        """A platform account by name, or a merchant's own by id: its own secrets verify what it sends."""
        configured = self._registry.get(gateway)
        if configured is None and self._accounts is not None:
            found = await self._accounts.for_notification(gateway)
            configured = None if found is None else found[1]
        return configured

    async def receive(self, gateway: str, headers: Mapping[str, str], body: bytes) -> Received:
        """Verify, deduplicate and apply one notification; raise a 4xx ApiError if it cannot be trusted."""
        configured = await self._configured(gateway)
        if configured is None:
            raise UnknownGateway(f"No such gateway: '{gateway}'.", param="gateway")
        try:
            async with asyncio.timeout(PARSE_TIMEOUT_SECONDS):
                notification = await configured.gateway.parse_webhook(headers, body)
        except (GatewayError, TimeoutError) as error:
            log.warning("refused a %s notification: %s", gateway, error)
            await self._hint(body)
            raise UnverifiableNotification(
                "The notification's signature could not be verified.", param="signature"
            ) from error
        _check_storable(gateway, notification)
        async with self._db.connection() as connection:
            fresh = await repo.record_notification(
                connection,
                gateway=gateway,
                event_id=notification.event_id,
                kind=notification.kind,
                attempt_id=notification.attempt_id,
                reference=notification.reference,
                outcome="received",
            )
        if not fresh:
            return Received(notification.event_id, notification.kind, "duplicate")
        try:
            outcome = await self._apply(gateway, notification)
        except Exception:
            async with self._db.connection() as connection:  # let the gateway's retry apply it
                await repo.forget_notification(connection, gateway, notification.event_id)
            raise
        async with self._db.transaction() as transaction:
            await repo.set_notification_outcome(transaction, gateway, notification.event_id, outcome)
            await _audit(transaction, gateway, notification, outcome)
        log.info("%s notification %s (%s): %s", gateway, notification.event_id, notification.kind, outcome)
        return Received(notification.event_id, notification.kind, outcome)

    async def _apply(self, gateway: str, notification: GatewayNotification) -> str:
        if notification.kind.startswith("refund."):
            return await self._refund(gateway, notification)
        async with self._db.connection() as connection:
            attempt = await charges_repo.find_attempt(
                connection, gateway, attempt_id=notification.attempt_id, reference=notification.reference
            )
            if attempt is None:
                return "unknown_attempt"
        if notification.kind == "dispute.created":
            async with self._db.transaction() as tx:
                return await self._dispute(tx, gateway, attempt, notification)
        template = _RESULTS.get(notification.kind)
        if template is None:
            async with self._db.connection() as connection:
                scheduled = await attempts_repo.check_now(connection, attempt.id)
            return "lookup_scheduled" if scheduled else "ignored"
        if attempt.status not in _APPLICABLE:
            # Final already (the request or a lookup got there first), or pending: its request is
            # running and will record the answer itself; if it died, the reconciler finds it.
            return "in_flight" if attempt.status == "pending" else "already_final"
        result = GatewayResult(
            template.outcome,
            reference=notification.reference,
            code=template.code or notification.kind,
            decline_code=template.decline_code,
            captured=template.captured,
        )
        decision = await self._attempts.apply_result(attempt, result)
        return "applied" if decision.action == "resolved" else decision.action

    async def _refund(self, gateway: str, notification: GatewayNotification) -> str:
        target = {"refund.succeeded": "succeeded", "refund.failed": "failed"}.get(notification.kind)
        if target is None:
            return "ignored"
        references = [r for r in (notification.extra.get("object_id"), notification.reference) if r]
        for reference in references:
            if await self._refunds.settle_by_reference(gateway, reference, target):
                return "refund_settled"
        return "ignored"

    @staticmethod
    async def _dispute(
        connection: Connection, gateway: str, attempt: Attempt, notification: GatewayNotification
    ) -> str:
        dispute = {
            "gateway": gateway,
            "gateway_event": notification.event_id,
            "id": notification.extra.get("object_id") or None,
            "amount": notification.amount,
        }
        event_id = await events_repo.emit_for_charge(
            connection, attempt.merchant_id, attempt.charge_id, "charge.disputed", {"dispute": dispute}
        )
        return "disputed" if event_id is not None else "unknown_attempt"

    async def _hint(self, body: bytes) -> None:
        """An unverified body naming our attempt: look it up now rather than at its scheduled time."""
        for match in _ATTEMPT_ID.findall(body[:65536])[:3]:
            try:
                async with self._db.connection() as connection:
                    if await attempts_repo.check_now(connection, match.decode()):
                        log.info("unverified notification: lookup of attempt %s brought forward", match.decode())
            except Exception:
                log.exception("could not schedule a lookup from an unverified notification")


async def _audit(transaction: Connection, gateway: str, notification: GatewayNotification, outcome: str) -> None:
    await record(
        transaction,
        AuditEvent(
            actor=Actor(user=f"gateway:{gateway}"),
            action="gateway_notification.received",
            resource=Resource(type="gateway_notification", id=f"{gateway}:{notification.event_id}"[:128]),
            outcome="success",
            details={
                "kind": notification.kind,
                "attempt": notification.attempt_id,
                "reference": notification.reference,
                "result": outcome,
            },
        ),
    )
