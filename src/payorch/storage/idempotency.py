"""Idempotency keys (DESIGN.md section 6): the only SQL for them.

An operation's first write takes its key in the same statement (``take_key``, CTEs composed into
that statement), and its last write stores the reply in the same statement as the final state
(``complete_key``). The named parameters they share with the statement around them: ``merchant_id``,
``key`` (NULL: the request has none), ``fingerprint``, ``method``, ``path`` and ``object_id`` (the
object the key's request creates: a charge, a refund, a payment method).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from payorch.storage.sql import Connection, Record, Statement


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    merchant_id: str
    key: str
    fingerprint: bytes
    status: str
    object_id: str | None
    """The object the key's first request created (charge, refund or payment method), once known."""
    response_status: int | None
    response_body: bytes | None
    locked_at: datetime


def take_key(object_id: str = "object_id") -> str:
    """CTEs ``k`` (the key taken, when there is one, naming the object whose id is the parameter
    ``object_id``) and ``ok`` (one row when the operation may go on: no key, or the key was free).
    Statements write their rows ``WHERE EXISTS (SELECT 1 FROM ok)``."""
    return f"""
    k AS (
        INSERT INTO idempotency_keys (merchant_id, key, fingerprint, request_method, request_path, status, charge_id)
        SELECT :merchant_id::text, :key::text, :fingerprint::bytea, :method::text, :path::text, 'in_progress',
               :{object_id}::text
         WHERE :key::text IS NOT NULL
        ON CONFLICT (merchant_id, key) DO NOTHING
        RETURNING key
    ), ok AS (
        SELECT 1 WHERE :key::text IS NULL OR EXISTS (SELECT 1 FROM k)
    )"""


EXISTING_KEY = """
      LEFT JOIN idempotency_keys AS e
             ON e.merchant_id = :merchant_id::text AND e.key = :key::text AND NOT EXISTS (SELECT 1 FROM ok)"""
"""Joined to a statement's one result row: the key's row when it existed already (``e``), so a replay
needs no second round trip. Select ``EXISTING_KEY_COLUMNS`` with it."""

EXISTING_KEY_COLUMNS = """e.fingerprint AS key_fingerprint, e.status AS key_status, e.charge_id AS key_object_id,
           e.response_status AS key_response_status, e.response_body AS key_response_body,
           e.locked_at AS key_locked_at"""


def complete_key(condition: str, object_id: str = "object_id") -> str:
    """A CTE body storing the reply (``reply_status``, ``reply_body``) for ``key`` and the object it
    made (the parameter ``object_id``), when ``condition`` holds (the statement's state change
    happened). A NULL ``key`` stores nothing."""
    return f"""
        UPDATE idempotency_keys
           SET status = 'completed', response_status = :reply_status::integer, response_body = :reply_body::bytea,
               completed_at = now(), charge_id = coalesce(:{object_id}::text, charge_id)
         WHERE merchant_id = :merchant_id::text AND key = :key::text AND ({condition})
        RETURNING key"""


def existing_key(row: Record, merchant_id: str, key: str | None) -> IdempotencyRecord | None:
    """The key's record from a statement that joined ``EXISTING_KEY``; None when it did not exist
    or this statement's snapshot could not see it (its first request is committing right now)."""
    if key is None or row["key_status"] is None:
        return None
    return IdempotencyRecord(
        merchant_id=merchant_id,
        key=key,
        fingerprint=row["key_fingerprint"],
        status=row["key_status"],
        object_id=row["key_object_id"],
        response_status=row["key_response_status"],
        response_body=row["key_response_body"],
        locked_at=row["key_locked_at"],
    )


_TAKE = Statement(
    f"""
    WITH {take_key()}
    SELECT EXISTS (SELECT 1 FROM k) AS taken, {EXISTING_KEY_COLUMNS}
      FROM (SELECT 1) AS one {EXISTING_KEY}
    """
)

_GET = """
    SELECT fingerprint AS key_fingerprint, status AS key_status, charge_id AS key_object_id,
           response_status AS key_response_status, response_body AS key_response_body, locked_at AS key_locked_at
      FROM idempotency_keys WHERE merchant_id = :merchant_id::text AND key = :key::text"""
_READ = Statement(_GET)
_LOCK = Statement(_GET + " FOR UPDATE")

_RELOCK = Statement(
    """
    UPDATE idempotency_keys SET locked_at = now(), charge_id = coalesce(charge_id, :object_id::text)
     WHERE merchant_id = :merchant_id::text AND key = :key::text
    """
)

_COMPLETE = Statement(f"WITH done AS ({complete_key('true')}) SELECT count(*) FROM done")

_IN_PROGRESS_FOR = Statement(
    """
    SELECT key FROM idempotency_keys
     WHERE merchant_id = :merchant_id::text AND charge_id = :object_id::text AND status = 'in_progress'
    """
)

_PURGE = Statement(
    """
    DELETE FROM idempotency_keys WHERE (merchant_id, key) IN (
        SELECT merchant_id, key FROM idempotency_keys
         WHERE created_at < now() - make_interval(hours => :hours::integer) LIMIT :batch::integer
    )
    """
)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """What taking a key records: the request's fingerprint, method and path."""

    merchant_id: str
    key: str
    fingerprint: bytes
    method: str
    path: str

    def params(self, object_id: str | None) -> dict[str, object]:
        return {
            "merchant_id": self.merchant_id,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "method": self.method,
            "path": self.path,
            "object_id": object_id,
        }


@dataclass(frozen=True, slots=True)
class KeyExists:
    """The key was taken before: an operation's first write wrote nothing."""

    record: IdempotencyRecord | None
    """Its row; None when the statement's snapshot could not see it yet (its first request is
    committing right now): ``lock`` waits for that."""


async def take(connection: Connection, request: KeyRequest, object_id: str | None) -> KeyExists | None:
    """Take the key, naming ``object_id`` when known. None: it is ours."""
    row = await _TAKE.fetchrow(connection, **request.params(object_id))
    if row is None or row["taken"]:
        return None
    return KeyExists(existing_key(row, request.merchant_id, request.key))


async def get(connection: Connection, merchant_id: str, key: str) -> IdempotencyRecord | None:
    row = await _READ.fetchrow(connection, merchant_id=merchant_id, key=key)
    return None if row is None else existing_key(row, merchant_id, key)


async def lock(connection: Connection, merchant_id: str, key: str) -> IdempotencyRecord | None:
    """The key's record under a row lock (waits for a concurrent first request to commit); None if
    it was purged meanwhile. Call in a transaction."""
    row = await _LOCK.fetchrow(connection, merchant_id=merchant_id, key=key)
    return None if row is None else existing_key(row, merchant_id, key)


async def relock(connection: Connection, merchant_id: str, key: str, object_id: str | None) -> None:
    """A request takes over a key abandoned by a request that died (naming its object if it had none)."""
    await _RELOCK.execute(connection, merchant_id=merchant_id, key=key, object_id=object_id)


async def complete(
    connection: Connection, merchant_id: str, key: str, *, status: int, body: bytes, object_id: str | None
) -> None:
    """Store the final reply for replay (in the caller's transaction)."""
    await _COMPLETE.fetchval(
        connection, merchant_id=merchant_id, key=key, reply_status=status, reply_body=body, object_id=object_id
    )


async def in_progress_key_for(connection: Connection, merchant_id: str, object_id: str) -> str | None:
    """The key whose request created ``object_id`` and never stored its reply (it died)."""
    key: str | None = await _IN_PROGRESS_FOR.fetchval(connection, merchant_id=merchant_id, object_id=object_id)
    return key


async def purge_older_than(connection: Connection, hours: int, *, batch: int = 5000) -> int:
    """Delete up to ``batch`` keys older than ``hours`` (in batches: a large purge never holds long locks)."""
    return await _PURGE.execute(connection, hours=hours, batch=batch)
