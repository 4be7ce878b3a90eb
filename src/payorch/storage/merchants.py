"""Merchants and their API keys: the only SQL for both."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from payorch.storage.sql import Connection, Record, Statement, row_to


@dataclass(frozen=True, slots=True)
class Merchant:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeySummary:
    """A key as its merchant may see it again: never the secret or its hash."""

    id: str
    mode: str
    lookup: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    merchant_id: str
    lookup: str
    secret_hash: bytes
    mode: str
    scopes: tuple[str, ...]
    revoked_at: datetime | None


_INSERT_MERCHANT = Statement("""
    INSERT INTO merchants (id, name) VALUES (:merchant_id::text, :name::text) RETURNING id, name, created_at
""")
_GET_MERCHANT = Statement("SELECT id, name, created_at FROM merchants WHERE id = :merchant_id::text")
_FIRST_MERCHANT = Statement("SELECT id, name, created_at FROM merchants ORDER BY id LIMIT 1")

_INSERT_API_KEY = Statement("""
    INSERT INTO api_keys (id, merchant_id, lookup, secret_hash, mode, scopes)
    VALUES (:key_id::text, :merchant_id::text, :lookup::text, :secret_hash::bytea, :mode::text, :scopes::text[])
""")
# By lookup alone: the presented key names no merchant; the lookup is unique across them.
_FIND_API_KEY = Statement("""
    SELECT id, merchant_id, lookup, secret_hash, mode, scopes, revoked_at FROM api_keys WHERE lookup = :lookup::text
""")
# Any merchant's key (the operators' CLI), or only the named merchant's (the dashboard).
_REVOKE_API_KEY = Statement("""
    UPDATE api_keys SET revoked_at = now()
     WHERE id = :key_id::text AND revoked_at IS NULL
       AND (:merchant_id::text IS NULL OR merchant_id = :merchant_id::text)
    RETURNING merchant_id
""")
_LIST_API_KEYS = Statement("""
    SELECT id, mode, lookup, created_at, last_used_at, revoked_at FROM api_keys
     WHERE merchant_id = :merchant_id::text ORDER BY id DESC
""")
_LIST_MERCHANTS = Statement("SELECT id, name, created_at FROM merchants ORDER BY id LIMIT :limit::integer")
_TOUCH_API_KEY = Statement("UPDATE api_keys SET last_used_at = now() WHERE id = :key_id::text")


def _merchant(row: Record | None) -> Merchant | None:
    return None if row is None else row_to(Merchant, row)


async def insert_merchant(connection: Connection, merchant_id: str, name: str) -> Merchant:
    (row,) = await _INSERT_MERCHANT.fetch(connection, merchant_id=merchant_id, name=name)
    return row_to(Merchant, row)


async def get_merchant(connection: Connection, merchant_id: str) -> Merchant | None:
    return _merchant(await _GET_MERCHANT.fetchrow(connection, merchant_id=merchant_id))


async def first_merchant(connection: Connection) -> Merchant | None:
    return _merchant(await _FIRST_MERCHANT.fetchrow(connection))


async def insert_api_key(
    connection: Connection,
    *,
    key_id: str,
    merchant_id: str,
    lookup: str,
    secret_hash: bytes,
    mode: str,
    scopes: tuple[str, ...],
) -> None:
    await _INSERT_API_KEY.execute(
        connection,
        key_id=key_id,
        merchant_id=merchant_id,
        lookup=lookup,
        secret_hash=secret_hash,
        mode=mode,
        scopes=list(scopes),
    )


async def find_api_key(connection: Connection, lookup: str) -> ApiKeyRecord | None:
    row = await _FIND_API_KEY.fetchrow(connection, lookup=lookup)
    if row is None:
        return None
    return ApiKeyRecord(
        id=row["id"],
        merchant_id=row["merchant_id"],
        lookup=row["lookup"],
        secret_hash=bytes(row["secret_hash"]),
        mode=row["mode"],
        scopes=tuple(row["scopes"]),
        revoked_at=row["revoked_at"],
    )


async def list_merchants(connection: Connection, *, limit: int = 1000) -> list[Merchant]:
    return [row_to(Merchant, row) for row in await _LIST_MERCHANTS.fetch(connection, limit=limit)]


async def revoke_api_key(connection: Connection, key_id: str, *, merchant_id: str | None = None) -> str | None:
    """Revoke a key (only ``merchant_id``'s, when given); returns its merchant id, or None if there is
    no such active key."""
    revoked: str | None = await _REVOKE_API_KEY.fetchval(connection, key_id=key_id, merchant_id=merchant_id)
    return revoked


async def list_api_keys(connection: Connection, merchant_id: str) -> list[ApiKeySummary]:
    """One merchant's keys, newest first, revoked ones included."""
    return [row_to(ApiKeySummary, row) for row in await _LIST_API_KEYS.fetch(connection, merchant_id=merchant_id)]


async def touch_api_key(connection: Connection, key_id: str) -> None:
    await _TOUCH_API_KEY.execute(connection, key_id=key_id)
