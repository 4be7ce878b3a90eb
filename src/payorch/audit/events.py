"""Audit events (PCI DSS 10.2.2: who, what, which resource, outcome, when, from where) and ``record``.

``record(connection, event)`` redacts the event and writes it to ``audit_outbox`` inside the
caller's transaction: the action and its audit row commit or roll back together. The caller commits.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from payorch import jsontext
from payorch.audit.redaction import redact
from payorch.storage.audit import INSERT_OUTBOX, OUTBOX_PARAMS
from payorch.storage.sql import Connection

Outcome = Literal["success", "failure", "unknown"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class AuditAction(enum.StrEnum):
    """The catalogue of audited actions. ``AuditEvent.action`` also accepts any ``noun.verb`` string,
    so a new action needs no change here, but prefer adding it for one place to read them all."""

    CHARGE_CREATED = "charge.created"
    CHARGE_ATTEMPT_SENT = "charge.attempt.sent"
    CHARGE_ATTEMPT_OUTCOME = "charge.attempt.outcome"
    CHARGE_SUCCEEDED = "charge.succeeded"
    CHARGE_AUTHORIZED = "charge.authorized"
    CHARGE_FAILED = "charge.failed"
    CHARGE_PROCESSING = "charge.processing"
    CHARGE_REQUIRES_ACTION = "charge.requires_action"
    CHARGE_CAPTURED = "charge.captured"
    CHARGE_CANCELED = "charge.canceled"
    CHARGE_CAPTURE_REFUSED = "charge.capture_refused"
    CHARGE_CANCEL_REFUSED = "charge.cancel_refused"
    REFUND_REFUSED = "refund.refused"
    REFUND_CREATED = "refund.created"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    PAYMENT_METHOD_VAULTED = "payment_method.vaulted"
    RECONCILER_DECISION = "reconciler.decision"
    MERCHANT_CREATED = "merchant.created"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    RECONCILER_RUN = "reconciler.run"
    DATABASE_MIGRATED = "database.migrated"
    AUDIT_TRAIL_VERIFIED = "audit_trail.verified"
    """``payorch audit verify`` read the trail (PCI DSS 10.2.1.3: access to audit logs)."""
    AUTHENTICATION_FAILED = "authentication.failed"
    AUTHENTICATION_FAILURES = "authentication.failures"
    """The summary of a window's failed authentications after its first (``details.count``)."""
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    BANK_LINK_CREATED = "bank_link.created"
    BANK_LINK_COMPLETED = "bank_link.completed"
    BANK_LINK_FAILED = "bank_link.failed"
    DASHBOARD_USER_CREATED = "dashboard_user.created"
    DASHBOARD_USER_SIGNED_IN = "dashboard_user.signed_in"
    DASHBOARD_USER_SIGN_IN_FAILED = "dashboard_user.sign_in_failed"
    DASHBOARD_USER_LOCKED = "dashboard_user.locked"
    DASHBOARD_USER_UNLOCKED = "dashboard_user.unlocked"
    DASHBOARD_USER_SIGNED_OUT = "dashboard_user.signed_out"


def new_audit_id(now: dt.datetime | None = None) -> str:
    """``aud_`` + 26 Crockford base32 characters: 48-bit milliseconds then 80 random bits (ULID
    layout), so ids sort by creation time."""
    millis = int((now.timestamp() if now else time.time()) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "aud_" + "".join(reversed(chars))


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Actor(BaseModel):
    """Who: the merchant, the API key it used, and a human user when there is one (dashboard, CLI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    merchant_id: str | None = None
    api_key_id: str | None = None
    user: str | None = None
    """``system:reconciler``, ``cli:<os user>`` or a dashboard user; never a credential."""


class Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: str = Field(min_length=1, max_length=64)
    id: str = Field(min_length=1, max_length=128)


class Origin(BaseModel):
    """From where: client IP (as resolved through trusted proxies) and the request id; for an action
    without a request (the CLI), the host it ran on."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    ip: str | None = None
    request_id: str | None = None
    host: str | None = Field(default=None, max_length=255)


class AuditEvent(BaseModel):
    """One audited action. ``details`` is free-form and redacted before it is stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str = Field(default_factory=new_audit_id, pattern=r"^aud_[0-9A-Z]{26}$")
    occurred_at: dt.datetime = Field(default_factory=_utcnow)
    actor: Actor = Field(default_factory=Actor)
    action: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=128)
    resource: Resource
    outcome: Outcome = "success"
    origin: Origin = Field(default_factory=Origin)
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("occurred_at must be timezone-aware")
        return value.astimezone(dt.UTC)

    def redacted_payload(self) -> dict[str, Any]:
        """The JSON form stored and shipped: every field but the id and timestamp goes through
        ``redact``, so a card number or key anywhere (a user name, a resource id) is masked too."""
        payload: dict[str, Any] = redact(self.model_dump(mode="json", exclude={"id", "occurred_at"}))
        if self.origin.host is None:
            del payload["origin"]["host"]  # events with a request keep their {ip, request_id} origin
        elif "host" not in payload["details"]:
            # CLI events have always named their host in details; those recorded through a service
            # (a redelivery, a bank link refresh) carry it there too.
            payload["details"]["host"] = payload["origin"]["host"]
        payload["id"] = self.id
        payload["occurred_at"] = self.occurred_at.isoformat(timespec="microseconds").replace("+00:00", "Z")
        return payload


async def record(connection: Connection, event: AuditEvent) -> None:
    """Redact ``event`` and add it to ``audit_outbox`` in the connection's current transaction.

    Never commits: the caller's transaction commits the action and its audit row together, or
    rolls both back.
    """
    await record_many(connection, [event])


async def record_many(connection: Connection, events: Sequence[AuditEvent]) -> None:
    """``record`` for several events of one transaction, in one INSERT statement (the charge path
    writes two per transaction). Their outbox order, and so their chain order, is the list's order."""
    if not events:
        return
    await INSERT_OUTBOX.execute(connection, **outbox_params(events))


def outbox_params(events: Sequence[AuditEvent], conditional: bool | Sequence[bool] = False) -> dict[str, list[Any]]:
    """``events`` redacted, as the named parameters of ``storage.audit.outbox_insert`` (ids, times,
    merchants, payloads as JSON text), in order. ``conditional``: whether each event (or every
    event) is written only when the fragment's condition holds."""
    flags = [conditional] * len(events) if isinstance(conditional, bool) else list(conditional)
    if len(flags) != len(events):
        raise ValueError("one conditional flag per event")
    columns = (
        [event.id for event in events],
        [event.occurred_at for event in events],
        [event.actor.merchant_id for event in events],
        [jsontext.dumps_text(event.redacted_payload()) for event in events],
        flags,
    )
    return dict(zip(OUTBOX_PARAMS, columns, strict=True))
