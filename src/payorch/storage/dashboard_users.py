"""Dashboard users (merchants' users and operators): the only SQL for them.

Sign-in finds a user by email alone (unique across merchants). Failed sign-ins are counted on the
row; reaching the threshold locks it until ``locked_until``, in the same statement, so concurrent
failures cannot slip past the count.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from payorch.storage.sql import Connection, Record, Statement, row_to


@dataclass(frozen=True, slots=True)
class DashboardUser:
    id: str
    merchant_id: str | None
    """None for an operator."""
    role: str
    email: str
    password_hash: str
    failed_sign_ins: int
    locked_until: datetime | None
    session_generation: int
    last_sign_in_at: datetime | None
    created_at: datetime

    @property
    def operator(self) -> bool:
        return self.role == "operator"


@dataclass(frozen=True, slots=True)
class FailedSignIn:
    failed_sign_ins: int
    locked_until: datetime | None
    locked_now: bool
    """This failure reached the threshold and locked the user."""


_COLUMNS = ", ".join(field.name for field in fields(DashboardUser))

_INSERT = Statement(f"""
    INSERT INTO dashboard_users (id, merchant_id, role, email, password_hash)
    VALUES (:user_id::text, :merchant_id::text, :role::text, :email::text, :password_hash::text)
    RETURNING {_COLUMNS}
""")
_BY_EMAIL = Statement(f"SELECT {_COLUMNS} FROM dashboard_users WHERE email = :email::text")
_BY_ID = Statement(f"SELECT {_COLUMNS} FROM dashboard_users WHERE id = :user_id::text")
_COUNT_FOR_MERCHANT = Statement("SELECT count(*) FROM dashboard_users WHERE merchant_id = :merchant_id::text")

# A lock that has run out starts the count afresh.
_FAILED = Statement("""
    WITH counted AS (
        SELECT id, CASE WHEN locked_until IS NOT NULL AND locked_until <= now() THEN 1
                        ELSE failed_sign_ins + 1 END AS failures
          FROM dashboard_users WHERE id = :user_id::text FOR UPDATE
    )
    UPDATE dashboard_users AS u
       SET failed_sign_ins = c.failures,
           locked_until = CASE WHEN c.failures >= :threshold::integer
                               THEN now() + make_interval(secs => :lock_seconds::float8)
                               WHEN u.locked_until <= now() THEN NULL
                               ELSE u.locked_until END
      FROM counted AS c
     WHERE u.id = c.id
    RETURNING u.failed_sign_ins, u.locked_until, c.failures = :threshold::integer AS locked_now
""")
_SIGNED_IN = Statement("""
    UPDATE dashboard_users SET failed_sign_ins = 0, locked_until = NULL, last_sign_in_at = now()
     WHERE id = :user_id::text
""")
_NEXT_GENERATION = Statement("""
    UPDATE dashboard_users SET session_generation = session_generation + 1 WHERE id = :user_id::text
    RETURNING session_generation
""")
_UNLOCK = Statement(f"""
    UPDATE dashboard_users SET failed_sign_ins = 0, locked_until = NULL WHERE email = :email::text
    RETURNING {_COLUMNS}
""")


def _user(row: Record | None) -> DashboardUser | None:
    return None if row is None else row_to(DashboardUser, row)


async def insert_user(
    connection: Connection, *, user_id: str, merchant_id: str | None, email: str, password_hash: str
) -> DashboardUser:
    """A merchant's user, or an operator when ``merchant_id`` is None. ``email`` is lower-case."""
    role = "operator" if merchant_id is None else "merchant"
    (row,) = await _INSERT.fetch(
        connection, user_id=user_id, merchant_id=merchant_id, role=role, email=email, password_hash=password_hash
    )
    return row_to(DashboardUser, row)


async def find_by_email(connection: Connection, email: str) -> DashboardUser | None:
    return _user(await _BY_EMAIL.fetchrow(connection, email=email))


async def get_user(connection: Connection, user_id: str) -> DashboardUser | None:
    return _user(await _BY_ID.fetchrow(connection, user_id=user_id))


async def count_for_merchant(connection: Connection, merchant_id: str) -> int:
    return int(await _COUNT_FOR_MERCHANT.fetchval(connection, merchant_id=merchant_id))


async def record_failed_sign_in(
    connection: Connection, user_id: str, *, threshold: int, lock_seconds: float
) -> FailedSignIn:
    """Count a failed sign-in; the one that reaches ``threshold`` locks the user for ``lock_seconds``."""
    (row,) = await _FAILED.fetch(connection, user_id=user_id, threshold=threshold, lock_seconds=lock_seconds)
    return FailedSignIn(row["failed_sign_ins"], row["locked_until"], bool(row["locked_now"]))


async def record_sign_in(connection: Connection, user_id: str) -> None:
    """A successful sign-in: the failure count and any expired lock are cleared."""
    await _SIGNED_IN.execute(connection, user_id=user_id)


async def end_sessions(connection: Connection, user_id: str) -> int:
    """Every session cookie issued so far stops working (signing out); the new generation."""
    return int(await _NEXT_GENERATION.fetchval(connection, user_id=user_id))


async def unlock(connection: Connection, email: str) -> DashboardUser | None:
    """Clear the failure count and the lock (an operator's reset); None when there is no such user."""
    return _user(await _UNLOCK.fetchrow(connection, email=email))
