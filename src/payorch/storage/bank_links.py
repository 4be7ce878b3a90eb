"""Bank links and their single-use OAuth states (migration 0005_bank_links): the only SQL for both.

``bank_links`` is hash-partitioned on merchant_id and every query on it names the merchant, but for
``merchant_of`` (the operator's lookup by link id). ``bank_link_states`` is a small unpartitioned
lookup keyed by the SHA-256 of ``state``: the browser callback carries no API key, so the state's
digest is how it finds the merchant and link, and its primary key makes a digest globally unique.
Functions take a connection and never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

from payorch.storage.sql import Connection, Record, Statement, row_to


@dataclass(frozen=True, slots=True)
class BankLink:
    id: str
    merchant_id: str
    livemode: bool
    user_reference: str
    status: str
    scopes: tuple[str, ...]
    api_key_id: str | None
    expires_at: dt.datetime
    failure_code: str | None
    failure_message: str | None
    secret_name: str | None
    secret_version: str | None
    secret_generation: int
    created_at: dt.datetime
    updated_at: dt.datetime
    linked_at: dt.datetime | None
    refreshed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ConsumedState:
    merchant_id: str
    link_id: str
    verifier_sealed: bytes | None
    expired: bool


_LINK = ", ".join(field.name for field in fields(BankLink))
_WHERE_LINK = "merchant_id = :merchant_id::text AND id = :link_id::text"

# The link and its state in one statement, both expiring ``ttl`` from the database's clock.
_INSERT_LINK = Statement(f"""
    WITH link AS (
        INSERT INTO bank_links (id, merchant_id, livemode, user_reference, status, scopes, api_key_id, expires_at,
                                secret_generation)
        VALUES (:link_id::text, :merchant_id::text, :livemode::boolean, :user_reference::text, 'pending',
                :scopes::text[], :api_key_id::text, now() + :ttl::interval, 0)
        RETURNING {_LINK}
    ), state AS (
        INSERT INTO bank_link_states (state_hash, merchant_id, link_id, verifier_sealed, expires_at)
        SELECT :state_hash::bytea, merchant_id, id, :verifier_sealed::bytea, expires_at FROM link
    )
    SELECT {_LINK} FROM link
""")

# Guarded by ``consumed_at IS NULL``: of two concurrent callbacks with one state, the second blocks
# on the row lock, re-reads the row, sees it consumed and updates nothing.
_CONSUME_STATE = Statement("""
    UPDATE bank_link_states SET consumed_at = now()
     WHERE state_hash = :state_hash::bytea AND consumed_at IS NULL
    RETURNING merchant_id, link_id, verifier_sealed, expires_at <= now() AS expired
""")
# The sealed verifier is needed once, when the state is consumed: then it is dropped from the row.
_DROP_VERIFIER = Statement("UPDATE bank_link_states SET verifier_sealed = NULL WHERE state_hash = :state_hash::bytea")

_USED_STATE = Statement("""
    SELECT merchant_id, link_id FROM bank_link_states WHERE state_hash = :state_hash::bytea AND consumed_at IS NOT NULL
""")

_GET_LINK = Statement(f"SELECT {_LINK} FROM bank_links WHERE {_WHERE_LINK}")

_MERCHANT_OF = Statement("SELECT merchant_id FROM bank_links WHERE id = :link_id::text LIMIT 1")

_MARK_FAILED = Statement(f"""
    UPDATE bank_links
       SET status = 'failed', failure_code = :code::text, failure_message = :message::text,
           refresh_lease_until = NULL, updated_at = now()
     WHERE {_WHERE_LINK} AND status = ANY (:from_statuses::text[])
    RETURNING {_LINK}
""")

_MARK_ACTIVE = Statement(f"""
    UPDATE bank_links
       SET status = 'active', secret_name = :secret_name::text, secret_version = :secret_version::text,
           secret_generation = 1, linked_at = now(), updated_at = now()
     WHERE {_WHERE_LINK} AND status = 'pending'
    RETURNING {_LINK}
""")

_TAKE_REFRESH_LEASE = Statement(f"""
    UPDATE bank_links SET refresh_lease_until = now() + :lease::interval
     WHERE {_WHERE_LINK} AND status = 'active' AND (refresh_lease_until IS NULL OR refresh_lease_until < now())
    RETURNING {_LINK}
""")

# A rotated refresh token comes with its new secret version and generation; otherwise both are NULL
# and the link keeps the ones it has.
_FINISH_REFRESH = Statement(f"""
    UPDATE bank_links
       SET refresh_lease_until = NULL, refreshed_at = now(), updated_at = now(),
           secret_version = COALESCE(:secret_version::text, secret_version),
           secret_generation = COALESCE(:secret_generation::integer, secret_generation)
     WHERE {_WHERE_LINK}
    RETURNING {_LINK}
""")

_RELEASE_REFRESH_LEASE = Statement(f"""
    UPDATE bank_links SET refresh_lease_until = NULL, updated_at = now() WHERE {_WHERE_LINK}
""")


def _link(row: Record) -> BankLink:
    link = row_to(BankLink, row)
    return replace(link, scopes=tuple(link.scopes or ()))


def _found(row: Record | None) -> BankLink | None:
    return None if row is None else _link(row)


async def insert_link(
    connection: Connection,
    *,
    link_id: str,
    merchant_id: str,
    livemode: bool,
    user_reference: str,
    scopes: Sequence[str],
    api_key_id: str | None,
    state_hash: bytes,
    verifier_sealed: bytes,
    ttl: dt.timedelta,
) -> BankLink:
    """A pending link and its state, both expiring ``ttl`` from the database's clock."""
    (row,) = await _INSERT_LINK.fetch(
        connection,
        link_id=link_id,
        merchant_id=merchant_id,
        livemode=livemode,
        user_reference=user_reference,
        scopes=list(scopes),
        api_key_id=api_key_id,
        ttl=ttl,
        state_hash=state_hash,
        verifier_sealed=verifier_sealed,
    )
    return _link(row)


async def consume_state(connection: Connection, state_hash: bytes) -> ConsumedState | None:
    """Mark an unused state used and return it (its sealed verifier then dropped from the row); None
    when it is unknown or already used."""
    row = await _CONSUME_STATE.fetchrow(connection, state_hash=state_hash)
    if row is None:
        return None
    await _DROP_VERIFIER.execute(connection, state_hash=state_hash)
    sealed = bytes(row["verifier_sealed"]) if row["verifier_sealed"] is not None else None
    return ConsumedState(row["merchant_id"], row["link_id"], sealed, bool(row["expired"]))


async def used_state(connection: Connection, state_hash: bytes) -> tuple[str, str] | None:
    """(merchant id, link id) of a state that was already consumed; None for an unknown one."""
    row = await _USED_STATE.fetchrow(connection, state_hash=state_hash)
    return None if row is None else (str(row["merchant_id"]), str(row["link_id"]))


async def get_link(connection: Connection, merchant_id: str, link_id: str) -> BankLink | None:
    return _found(await _GET_LINK.fetchrow(connection, merchant_id=merchant_id, link_id=link_id))


async def merchant_of(connection: Connection, link_id: str) -> str | None:
    """The merchant owning ``link_id``: the operator CLI's lookup, the one query across partitions."""
    merchant_id = await _MERCHANT_OF.fetchval(connection, link_id=link_id)
    return None if merchant_id is None else str(merchant_id)


async def mark_failed(
    connection: Connection,
    merchant_id: str,
    link_id: str,
    *,
    code: str,
    message: str,
    from_statuses: Sequence[str] = ("pending",),
) -> BankLink | None:
    """Fail a link that is in one of ``from_statuses``; None when it is not (nothing changes)."""
    row = await _MARK_FAILED.fetchrow(
        connection,
        merchant_id=merchant_id,
        link_id=link_id,
        code=code,
        message=message,
        from_statuses=list(from_statuses),
    )
    return _found(row)


async def mark_active(
    connection: Connection, merchant_id: str, link_id: str, *, secret_name: str, secret_version: str
) -> BankLink | None:
    row = await _MARK_ACTIVE.fetchrow(
        connection, merchant_id=merchant_id, link_id=link_id, secret_name=secret_name, secret_version=secret_version
    )
    return _found(row)


async def take_refresh_lease(
    connection: Connection, merchant_id: str, link_id: str, lease: dt.timedelta
) -> BankLink | None:
    """Hold an active link for one refresh; None when it is not active or another refresh holds it."""
    return _found(await _TAKE_REFRESH_LEASE.fetchrow(connection, merchant_id=merchant_id, link_id=link_id, lease=lease))


async def finish_refresh(
    connection: Connection,
    merchant_id: str,
    link_id: str,
    *,
    secret_version: str | None = None,
    secret_generation: int | None = None,
) -> BankLink | None:
    """A refresh that got an access token: release the lease, and record the new secret version
    when the refresh token rotated (``secret_version`` and ``secret_generation`` together)."""
    if (secret_version is None) != (secret_generation is None):
        raise ValueError("a rotated secret has both a version and a generation")
    row = await _FINISH_REFRESH.fetchrow(
        connection,
        merchant_id=merchant_id,
        link_id=link_id,
        secret_version=secret_version,
        secret_generation=secret_generation,
    )
    return _found(row)


async def release_refresh_lease(connection: Connection, merchant_id: str, link_id: str) -> None:
    """A refresh that failed but left the link usable: release the lease, nothing else."""
    await _RELEASE_REFRESH_LEASE.execute(connection, merchant_id=merchant_id, link_id=link_id)
