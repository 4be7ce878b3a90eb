"""Gateway accounts and routing configurations: one merchant's routing set-up (``accounts/``).

Every write also ``pg_notify``s the merchant's id on :data:`CHANNEL` in the same statement, so each
process drops its cached view of that merchant as soon as the change commits; and records its audit
events in the same statement.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payorch.storage.audit import outbox_insert
from payorch.storage.sql import Connection, Statement, row_to

CHANNEL = "payorch_routing"


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    merchant_id: str
    livemode: bool
    name: str
    kind: str
    enabled: bool
    timeout_ms: int | None
    fees: dict[str, dict[str, int]]
    sealed_credentials: bytes
    wrapped_key: bytes
    wrap_key_id: str
    fingerprint: str
    secret_last4: str
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RoutingRow:
    merchant_id: str
    livemode: bool
    version: int
    config: dict[str, Any]
    api_key_id: str | None
    created_at: datetime


_ACCOUNT_COLUMNS = ", ".join(f.name for f in fields(AccountRow))
_ROUTING_COLUMNS = ", ".join(f.name for f in fields(RoutingRow))
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', :merchant_id::text)"

_INSERT = Statement(
    f"""
    WITH a AS (
        INSERT INTO gateway_accounts (id, merchant_id, livemode, name, kind, enabled, timeout_ms, fees,
                                      sealed_credentials, wrapped_key, wrap_key_id, fingerprint, secret_last4)
        VALUES (:id::text, :merchant_id::text, :livemode::boolean, :name::text, :kind::text, :enabled::boolean,
                :timeout_ms::integer, :fees::jsonb, :sealed_credentials::bytea, :wrapped_key::bytea,
                :wrap_key_id::text, :fingerprint::text, :secret_last4::text)
        ON CONFLICT (merchant_id, name) DO NOTHING
        RETURNING {_ACCOUNT_COLUMNS}
    ), n AS ({_NOTIFY} WHERE EXISTS (SELECT 1 FROM a)),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM a)")})
    SELECT {_ACCOUNT_COLUMNS} FROM a
    """
)

_UPDATE = Statement(
    f"""
    WITH a AS (
        UPDATE gateway_accounts
           SET name = :name::text, enabled = :enabled::boolean, timeout_ms = :timeout_ms::integer,
               fees = :fees::jsonb, sealed_credentials = :sealed_credentials::bytea,
               wrapped_key = :wrapped_key::bytea, wrap_key_id = :wrap_key_id::text,
               fingerprint = :fingerprint::text, secret_last4 = :secret_last4::text,
               revision = revision + 1, updated_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :id::text AND revision = :revision::integer
        RETURNING {_ACCOUNT_COLUMNS}
    ), n AS ({_NOTIFY} WHERE EXISTS (SELECT 1 FROM a)),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM a)")})
    SELECT {_ACCOUNT_COLUMNS} FROM a
    """
)

_REWRAP = Statement(
    f"""
    WITH a AS (
        UPDATE gateway_accounts
           SET wrapped_key = :wrapped_key::bytea, wrap_key_id = :wrap_key_id::text
         WHERE merchant_id = :merchant_id::text AND id = :id::text AND wrap_key_id = :old_key_id::text
        RETURNING id
    ), o AS ({outbox_insert("EXISTS (SELECT 1 FROM a)")})
    SELECT count(*) FROM a
    """
)

# An account holding money: an authorization to capture or release, a capture to refund, or an
# attempt whose outcome is still being resolved on it.
_DELETE = Statement(
    f"""
    WITH busy AS (
        SELECT 1 FROM charges
         WHERE merchant_id = :merchant_id::text AND gateway = :id::text
           AND (status IN ('authorized', 'pending', 'processing')
                OR (status = 'succeeded' AND amount_refunded < amount_captured))
        UNION ALL
        SELECT 1 FROM charge_attempts
         WHERE merchant_id = :merchant_id::text AND gateway = :id::text
           AND status IN ('pending', 'unknown', 'review')
        LIMIT 1
    ), a AS (
        DELETE FROM gateway_accounts
         WHERE merchant_id = :merchant_id::text AND id = :id::text AND NOT EXISTS (SELECT 1 FROM busy)
        RETURNING id
    ), n AS ({_NOTIFY} WHERE EXISTS (SELECT 1 FROM a)),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM a)")})
    SELECT EXISTS (SELECT 1 FROM a) AS deleted, EXISTS (SELECT 1 FROM busy) AS busy
    """
)

_GET = Statement(
    f"SELECT {_ACCOUNT_COLUMNS} FROM gateway_accounts WHERE merchant_id = :merchant_id::text AND id = :id::text"
)
_GET_ANY_MERCHANT = Statement(f"SELECT {_ACCOUNT_COLUMNS} FROM gateway_accounts WHERE id = :id::text")
_LIST = Statement(f"SELECT {_ACCOUNT_COLUMNS} FROM gateway_accounts WHERE merchant_id = :merchant_id::text ORDER BY id")
_WRAPPED_BY_OTHER = Statement(
    f"""
    SELECT {_ACCOUNT_COLUMNS} FROM gateway_accounts
     WHERE wrap_key_id <> :key_id::text AND id > :after::text ORDER BY id LIMIT :limit::integer
    """
)

# The charge path's one read of a merchant's set-up, taken once per cache period: every account and
# each mode's current routing configuration.
_VIEW = Statement(
    f"""
    SELECT (SELECT coalesce(array_agg(a ORDER BY a.id), '{{}}')
              FROM (SELECT {_ACCOUNT_COLUMNS} FROM gateway_accounts WHERE merchant_id = :merchant_id::text) AS a
           ) AS accounts,
           (SELECT row(version, config) FROM routing_configs
             WHERE merchant_id = :merchant_id::text AND NOT livemode ORDER BY version DESC LIMIT 1) AS test,
           (SELECT row(version, config) FROM routing_configs
             WHERE merchant_id = :merchant_id::text AND livemode ORDER BY version DESC LIMIT 1) AS live
    """
)

_PUT_ROUTING = Statement(
    f"""
    WITH r AS (
        INSERT INTO routing_configs (merchant_id, livemode, version, config, api_key_id)
        SELECT :merchant_id::text, :livemode::boolean,
               coalesce((SELECT max(version) FROM routing_configs
                          WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean), 0) + 1,
               :config::jsonb, :api_key_id::text
        RETURNING {_ROUTING_COLUMNS}
    ), n AS ({_NOTIFY}), o AS ({outbox_insert()})
    SELECT {_ROUTING_COLUMNS} FROM r
    """
)
_ROUTING_HISTORY = Statement(
    f"""
    SELECT {_ROUTING_COLUMNS} FROM routing_configs
     WHERE merchant_id = :merchant_id::text AND livemode = :livemode::boolean
     ORDER BY version DESC LIMIT :limit::integer
    """
)


def _account_params(row: AccountRow) -> dict[str, Any]:
    return {
        name: getattr(row, name)
        for name in (
            "id", "merchant_id", "livemode", "name", "kind", "enabled", "timeout_ms", "fees",
            "sealed_credentials", "wrapped_key", "wrap_key_id", "fingerprint", "secret_last4",
        )
    }  # fmt: skip


async def insert_account(connection: Connection, row: AccountRow, audit: dict[str, list[Any]]) -> AccountRow | None:
    """The new account and its audit events; None when the merchant already has one of that name."""
    stored = await _INSERT.fetchrow(connection, **_account_params(row), **audit)
    return None if stored is None else row_to(AccountRow, stored)


async def update_account(connection: Connection, row: AccountRow, audit: dict[str, list[Any]]) -> AccountRow | None:
    """``row`` as the account's new state, if it is still at ``row.revision``; None otherwise."""
    params = _account_params(row)
    del params["livemode"], params["kind"]
    stored = await _UPDATE.fetchrow(connection, **params, revision=row.revision, **audit)
    return None if stored is None else row_to(AccountRow, stored)


async def rewrap_account(
    connection: Connection, row: AccountRow, *, old_key_id: str, wrap_key_id: str, wrapped_key: bytes,
    audit: dict[str, list[Any]],
) -> bool:  # fmt: skip
    """The account's data key wrapped anew; the credentials' ciphertext is left alone."""
    count = await _REWRAP.fetchval(
        connection, merchant_id=row.merchant_id, id=row.id, old_key_id=old_key_id, wrap_key_id=wrap_key_id,
        wrapped_key=wrapped_key, **audit,
    )  # fmt: skip
    return bool(count)


async def delete_account(
    connection: Connection, merchant_id: str, account_id: str, audit: dict[str, list[Any]]
) -> tuple[bool, bool]:
    """``(deleted, busy)``: busy when the account still holds money or an open attempt."""
    row = await _DELETE.fetchrow(connection, merchant_id=merchant_id, id=account_id, **audit)
    return (bool(row["deleted"]), bool(row["busy"])) if row is not None else (False, False)


async def get_account(connection: Connection, merchant_id: str, account_id: str) -> AccountRow | None:
    row = await _GET.fetchrow(connection, merchant_id=merchant_id, id=account_id)
    return None if row is None else row_to(AccountRow, row)


async def find_account(connection: Connection, account_id: str) -> AccountRow | None:
    """An account by id alone: a gateway's notification names the account, not the merchant."""
    row = await _GET_ANY_MERCHANT.fetchrow(connection, id=account_id)
    return None if row is None else row_to(AccountRow, row)


async def list_accounts(connection: Connection, merchant_id: str) -> list[AccountRow]:
    return [row_to(AccountRow, row) for row in await _LIST.fetch(connection, merchant_id=merchant_id)]


async def wrapped_by_other(connection: Connection, key_id: str, after: str, limit: int) -> list[AccountRow]:
    """Accounts whose data key another master key than ``key_id`` wraps (a rotation's work list),
    in id order after ``after``."""
    rows = await _WRAPPED_BY_OTHER.fetch(connection, key_id=key_id, after=after, limit=limit)
    return [row_to(AccountRow, row) for row in rows]


async def merchant_view(
    connection: Connection, merchant_id: str
) -> tuple[list[AccountRow], dict[bool, tuple[int, dict[str, Any]] | None]]:
    """Every account of the merchant and each mode's current ``(version, config)``, in one round trip."""
    row = await _VIEW.fetchrow(connection, merchant_id=merchant_id)
    if row is None:
        return [], {False: None, True: None}
    names = [f.name for f in fields(AccountRow)]
    accounts = [AccountRow(**dict(zip(names, record, strict=True))) for record in row["accounts"]]
    current = {
        livemode: None if row[column] is None else (int(row[column][0]), row[column][1])
        for livemode, column in ((False, "test"), (True, "live"))
    }
    return accounts, current


async def put_routing(
    connection: Connection, merchant_id: str, livemode: bool, config: dict[str, Any], api_key_id: str | None,
    audit: dict[str, list[Any]],
) -> RoutingRow:  # fmt: skip
    row = await _PUT_ROUTING.fetchrow(
        connection, merchant_id=merchant_id, livemode=livemode, config=config, api_key_id=api_key_id, **audit
    )
    assert row is not None  # an INSERT ... SELECT of one row  # noqa: S101
    return row_to(RoutingRow, row)


async def routing_history(connection: Connection, merchant_id: str, livemode: bool, limit: int) -> list[RoutingRow]:
    rows = await _ROUTING_HISTORY.fetch(connection, merchant_id=merchant_id, livemode=livemode, limit=limit)
    return [row_to(RoutingRow, row) for row in rows]
