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
_REVOKE_API_KEY = Statement("""
    UPDATE api_keys SET revoked_at = now() WHERE id = :key_id::text AND revoked_at IS NULL RETURNING merchant_id
""")
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


async def revoke_api_key(connection: Connection, key_id: str) -> str | None:
    """Revoke a key; returns its merchant id, or None if there is no such active key."""
    merchant_id: str | None = await _REVOKE_API_KEY.fetchval(connection, key_id=key_id)
    return merchant_id


async def touch_api_key(connection: Connection, key_id: str) -> None:
    await _TOUCH_API_KEY.execute(connection, key_id=key_id)
