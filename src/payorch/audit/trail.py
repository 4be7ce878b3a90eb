"""Builders for the audit events the charge path, the reconciler, refusals and the CLI record.

They take plain values (ids, statuses, codes), so ``audit`` depends on nothing above it; the caller
records what they return with ``record_many`` in the transaction that performs the action.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import socket
from typing import Any

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Outcome, Resource

RECONCILER = Actor(user="system:reconciler")
ANONYMOUS_API_CALLER = "anonymous:api"
"""The actor's user for a request whose API key was refused: nobody was authenticated."""

# Attempt statuses (payments.states.AttemptStatus values) -> the audit outcome they mean.
_ATTEMPT_OUTCOME: dict[str, Outcome] = {
    "approved": "success",
    "declined": "failure",
    "not_sent": "failure",
    "unknown": "unknown",
    "pending": "unknown",
    "review": "unknown",
    "reversed": "success",
}

# Charge statuses -> (action, outcome). ``pending`` is not a decision and records nothing.
_CHARGE_STATUS: dict[str, tuple[str, Outcome]] = {
    "succeeded": (AuditAction.CHARGE_SUCCEEDED, "success"),
    "authorized": (AuditAction.CHARGE_AUTHORIZED, "success"),
    "failed": (AuditAction.CHARGE_FAILED, "failure"),
    "processing": (AuditAction.CHARGE_PROCESSING, "unknown"),
    "requires_action": (AuditAction.CHARGE_REQUIRES_ACTION, "unknown"),
    "canceled": (AuditAction.CHARGE_CANCELED, "success"),
}


def cli_actor(merchant_id: str | None = None) -> Actor:
    """``cli:<os user>``: who ran the command, as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (a bare container)
        user = f"uid{os.getuid()}"
    return Actor(merchant_id=merchant_id, user=f"cli:{user}")


def cli_details(**details: Any) -> dict[str, Any]:
    """A CLI action's details, with the host it ran on (the origin of an action without a request)."""
    return {**details, "host": socket.gethostname()}


def cli_origin() -> Origin:
    """Where a CLI action came from: the host it ran on (there is no client IP or request)."""
    return Origin(host=socket.gethostname())


def cli_event(
    action: str, resource: Resource, *, merchant_id: str | None = None, outcome: Outcome = "success", **details: Any
) -> AuditEvent:
    """A CLI action of its own (a reconciler run, a migration, an audit verification): the OS user,
    the host, and ``details``."""
    return AuditEvent(
        actor=cli_actor(merchant_id),
        action=action,
        resource=resource,
        outcome=outcome,
        origin=cli_origin(),
        details=cli_details(**details),
    )


def reconciler_run(actions: list[str]) -> AuditEvent:
    """``payorch reconcile``: one run by an operator, and how many attempts it decided what about
    (each decision is also on the trail as ``reconciler.decision``)."""
    counts = {action: actions.count(action) for action in sorted(set(actions))}
    return cli_event(
        AuditAction.RECONCILER_RUN, Resource(type="reconciler", id="run"), looked_up=len(actions), actions=counts
    )


def database_migrated(*, partitions: int) -> AuditEvent:
    """``payorch migrate``: the schema upgraded to the latest revision by an operator."""
    return cli_event(
        AuditAction.DATABASE_MIGRATED, Resource(type="database", id="payorch"), revision="head", partitions=partitions
    )


def reconciler_actor(merchant_id: str) -> Actor:
    return RECONCILER.model_copy(update={"merchant_id": merchant_id})


def charge_created(
    actor: Actor,
    origin: Origin,
    *,
    charge_id: str,
    amount: int,
    currency: str,
    capture: bool,
    livemode: bool,
    gateways: list[str],
    description: str | None,
    metadata: dict[str, str],
    idempotency_key: str | None,
) -> AuditEvent:
    """The merchant's request as accepted. Description and metadata are free text from the merchant:
    ``record`` redacts them (card numbers, keys) before anything is stored."""
    return AuditEvent(
        actor=actor,
        action=AuditAction.CHARGE_CREATED,
        resource=Resource(type="charge", id=charge_id),
        origin=origin,
        details={
            "amount": amount,
            "currency": currency,
            "capture": capture,
            "livemode": livemode,
            "gateways": gateways,
            "description": description,
            "metadata": metadata,
            "idempotency_key": idempotency_key,
        },
    )


def attempt_sent(
    actor: Actor, origin: Origin, *, charge_id: str, attempt_id: str, gateway: str, seq: int
) -> AuditEvent:
    """Written with the pending attempt, before the gateway is called."""
    return AuditEvent(
        actor=actor,
        action=AuditAction.CHARGE_ATTEMPT_SENT,
        resource=Resource(type="charge_attempt", id=attempt_id),
        origin=origin,
        details={"charge": charge_id, "gateway": gateway, "seq": seq},
    )


def attempt_outcome(
    actor: Actor,
    origin: Origin,
    *,
    charge_id: str,
    attempt_id: str,
    gateway: str,
    status: str,
    code: str | None,
    decline_code: str | None,
    reference: str | None,
    latency_ms: int | None,
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action=AuditAction.CHARGE_ATTEMPT_OUTCOME,
        resource=Resource(type="charge_attempt", id=attempt_id),
        outcome=_ATTEMPT_OUTCOME.get(status, "unknown"),
        origin=origin,
        details={
            "charge": charge_id,
            "gateway": gateway,
            "status": status,
            "code": code,
            "decline_code": decline_code,
            "gateway_reference": reference,
            "latency_ms": latency_ms,
        },
    )


def charge_status(
    actor: Actor,
    origin: Origin,
    *,
    charge_id: str,
    status: str,
    amount: int,
    currency: str,
    gateway: str | None,
    failure_code: str | None = None,
    decline_code: str | None = None,
    message: str | None = None,
) -> AuditEvent | None:
    """``charge.succeeded`` / ``authorized`` / ``failed`` / ``processing`` / ``canceled``; None for
    a status that is not a decision (``pending``)."""
    known = _CHARGE_STATUS.get(status)
    if known is None:
        return None
    action, outcome = known
    details: dict[str, Any] = {"status": status, "amount": amount, "currency": currency, "gateway": gateway}
    if failure_code is not None:
        details.update(code=failure_code, decline_code=decline_code, message=message)
    return AuditEvent(
        actor=actor,
        action=action,
        resource=Resource(type="charge", id=charge_id),
        outcome=outcome,
        origin=origin,
        details=details,
    )


def reconciler_decision(
    merchant_id: str,
    *,
    decision: str,
    charge_id: str,
    attempt_id: str,
    gateway: str,
    outcome: Outcome,
    **details: Any,
) -> AuditEvent:
    """One reconciler decision: resolved, rescheduled, review, reversed or reversal_failed."""
    return AuditEvent(
        actor=reconciler_actor(merchant_id),
        action=AuditAction.RECONCILER_DECISION,
        resource=Resource(type="charge_attempt", id=attempt_id),
        outcome=outcome,
        details={"decision": decision, "charge": charge_id, "gateway": gateway, **details},
    )


def merchant_created(
    actor: Actor, *, merchant_id: str, name: str, origin: Origin | None = None, **details: Any
) -> AuditEvent:
    return AuditEvent(
        actor=actor.model_copy(update={"merchant_id": merchant_id}),
        action=AuditAction.MERCHANT_CREATED,
        resource=Resource(type="merchant", id=merchant_id),
        origin=origin or Origin(),
        details={"name": name, **details},
    )


def api_key_created(
    actor: Actor, *, merchant_id: str, key_id: str, mode: str, origin: Origin | None = None, **details: Any
) -> AuditEvent:
    """Never the key itself: it is shown once to whoever created it and stored only as a hash."""
    return AuditEvent(
        actor=actor.model_copy(update={"merchant_id": merchant_id}),
        action=AuditAction.API_KEY_CREATED,
        resource=Resource(type="api_key", id=key_id),
        origin=origin or Origin(),
        details={"mode": mode, **details},
    )


def api_key_revoked(
    actor: Actor, *, merchant_id: str, key_id: str, origin: Origin | None = None, **details: Any
) -> AuditEvent:
    return AuditEvent(
        actor=actor.model_copy(update={"merchant_id": merchant_id}),
        action=AuditAction.API_KEY_REVOKED,
        resource=Resource(type="api_key", id=key_id),
        origin=origin or Origin(),
        details=details,
    )


def refused(
    actor: Actor, origin: Origin, *, action: str, resource: Resource, code: str, message: str, **details: Any
) -> AuditEvent:
    """A money action refused before anything moved (``charge.capture_refused``, ``refund.refused``,
    ...): who asked, from where, for what, and the refusal's code and message as answered."""
    return AuditEvent(
        actor=actor,
        action=action,
        resource=resource,
        outcome="failure",
        origin=origin,
        details={"code": code, "message": message, **details},
    )


def authentication_failed(
    origin: Origin,
    *,
    reason: str,
    key_prefix: str,
    merchant_id: str | None,
    key_id: str | None,
    window_start: dt.datetime,
    window_seconds: int,
    counted_as: str | None = None,
) -> AuditEvent:
    """The first refused API key of a window for this key prefix and client IP (``details.count`` 1).
    ``key_prefix`` names the key without its secret (its mode and lookup id), or ``missing`` /
    ``malformed``; a known key's merchant and id are named too. ``counted_as``: the window's prefix
    when the IP's distinct prefixes ran out (``*``)."""
    details: dict[str, Any] = {
        "code": "invalid_api_key",
        "reason": reason,
        "key_prefix": key_prefix,
        "count": 1,
        "window_start": window_start.isoformat(),
        "window_seconds": window_seconds,
    }
    if counted_as is not None:
        details["counted_as"] = counted_as
    return AuditEvent(
        actor=Actor(merchant_id=merchant_id, api_key_id=key_id, user=ANONYMOUS_API_CALLER),
        action=AuditAction.AUTHENTICATION_FAILED,
        resource=Resource(type="api_key", id=key_id or key_prefix),
        outcome="failure",
        origin=origin,
        details=details,
    )


def authentication_failures(
    ip: str | None,
    *,
    key_prefix: str,
    count: int,
    window_start: dt.datetime,
    window_seconds: int,
    first: dict[str, Any],
) -> AuditEvent:
    """The summary of one window's failed authentications for a key prefix and client IP, after the
    first (written on its own): ``count`` of them, ``window_total`` with the first. ``first`` is what
    the first one named (reason, merchant, key id, request id)."""
    merchant_id, key_id = first.get("merchant_id"), first.get("key_id")
    return AuditEvent(
        actor=Actor(merchant_id=merchant_id, api_key_id=key_id, user=ANONYMOUS_API_CALLER),
        action=AuditAction.AUTHENTICATION_FAILURES,
        resource=Resource(type="api_key", id=key_id or key_prefix),
        outcome="failure",
        origin=Origin(ip=ip),
        details={
            "code": "invalid_api_key",
            "reason": first.get("reason"),
            "key_prefix": key_prefix,
            "count": count,
            "window_total": count + 1,
            "window_start": window_start.isoformat(),
            "window_seconds": window_seconds,
            "first_request_id": first.get("request_id"),
        },
    )
