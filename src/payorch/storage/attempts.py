"""Charge attempts whose outcome is not known yet: leasing them for a lookup and recording what the
lookup (or a gateway's notification) found. Part of the charge aggregate (``storage.charges``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from payorch.storage.audit import outbox_insert
from payorch.storage.charge_writes import RECORD_ATTEMPT
from payorch.storage.charges import ATTEMPT_COLUMNS, Attempt, AttemptResult
from payorch.storage.sql import Connection, Statement, row_to

_LEASE = """
    UPDATE charge_attempts AS a
       SET next_check_at = now() + make_interval(secs => :lease_seconds::double precision),
           check_count = a.check_count + 1, updated_at = now()
      FROM (SELECT merchant_id, id FROM charge_attempts
             WHERE {due}
             ORDER BY {order}
             LIMIT :limit::integer
             FOR UPDATE SKIP LOCKED) AS due
     WHERE a.merchant_id = due.merchant_id AND a.id = due.id
    RETURNING {columns}
    """
"""Claim the attempts that are ``due`` (oldest first by ``order``), leased by pushing their next check
past the lease. Not by merchant: the reconciler looks across every merchant's open attempts (partial
indexes hold only those)."""

_RETURNED = ", ".join(f"a.{name}" for name in ATTEMPT_COLUMNS.split(", "))

_LEASE_DUE = Statement(
    _LEASE.format(
        due="""status IN ('pending', 'unknown')
               AND coalesce(next_check_at, created_at) <= now()
               AND (status = 'unknown' OR created_at < :stale_before::timestamptz)""",
        order="coalesce(next_check_at, created_at)",
        columns=_RETURNED,
    )
)

# Authentications whose customer did not come back in time: the attempt's next_check_at is its expiry.
_LEASE_EXPIRED = Statement(
    _LEASE.format(due="status = 'requires_action' AND next_check_at <= now()", order="next_check_at", columns=_RETURNED)
)

_RECORD = Statement(
    f"""
    WITH r AS ({RECORD_ATTEMPT}), o AS ({outbox_insert("EXISTS (SELECT 1 FROM r)")})
    SELECT EXISTS (SELECT 1 FROM r)
    """
)

_SET_STATUS = Statement(
    f"""
    WITH r AS (
        UPDATE charge_attempts
           SET status = :status::text, next_check_at = :next_check_at::timestamptz, updated_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :attempt_id::text AND status = :expected::text
        RETURNING id
    ), o AS ({outbox_insert("EXISTS (SELECT 1 FROM r)")})
    SELECT EXISTS (SELECT 1 FROM r)
    """
)

# An unverified hint (a notification naming our attempt) only brings the next lookup forward.
_CHECK_NOW = Statement(
    """
    UPDATE charge_attempts SET next_check_at = now(), updated_at = now()
     WHERE id = :attempt_id::text AND status = 'unknown' AND next_check_at > now()
    """
)


async def lease_due(
    connection: Connection, *, limit: int, stale_before: datetime, lease_seconds: float
) -> list[Attempt]:
    """Claim attempts due for a lookup: unknown ones whose check is due, and pending ones older than
    ``stale_before`` (their request died). Each is leased by pushing its next check past the lease,
    so several reconcilers never look up one attempt at once (``FOR UPDATE SKIP LOCKED``) and a
    reconciler that dies mid-lookup only delays it."""
    rows = await _LEASE_DUE.fetch(connection, limit=limit, stale_before=stale_before, lease_seconds=lease_seconds)
    return [row_to(Attempt, row) for row in rows]


async def lease_expired_authentications(connection: Connection, *, limit: int, lease_seconds: float) -> list[Attempt]:
    """Claim attempts whose customer authentication is past its expiry, as ``lease_due`` does."""
    rows = await _LEASE_EXPIRED.fetch(connection, limit=limit, lease_seconds=lease_seconds)
    return [row_to(Attempt, row) for row in rows]


async def record_result(
    connection: Connection, attempt: Attempt, result: AttemptResult, audit: dict[str, list[Any]]
) -> bool:
    """An attempt's outcome, if it is still in the status it was read in, with the ``audit`` events
    (the conditional ones only if it was recorded)."""
    recorded = await _RECORD.fetchval(
        connection,
        merchant_id=attempt.merchant_id,
        attempt_id=attempt.id,
        attempt_expected=attempt.status,
        **result.params(),
        **audit,
    )
    return bool(recorded)


async def set_status(
    connection: Connection,
    attempt: Attempt,
    status: str,
    *,
    next_check_at: datetime | None,
    audit: dict[str, list[Any]],
    expected: str | None = None,
) -> bool:
    """Move an attempt (from ``expected``, by default the status it was read in) to ``status``:
    rescheduled (unknown, with its next check), flagged for review, or reversed."""
    moved = await _SET_STATUS.fetchval(
        connection,
        merchant_id=attempt.merchant_id,
        attempt_id=attempt.id,
        expected=expected or attempt.status,
        status=status,
        next_check_at=next_check_at,
        **audit,
    )
    return bool(moved)


async def check_now(connection: Connection, attempt_id: str) -> bool:
    """An unresolved attempt's next lookup, now."""
    return await _CHECK_NOW.execute(connection, attempt_id=attempt_id) > 0
