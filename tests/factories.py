"""Plain typed factories: each test makes its own merchant, so tests never see each other's rows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from payorch.audit.events import outbox_params
from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.security.api_keys import create_key
from payorch.storage import charge_writes
from payorch.storage import merchants as repo
from payorch.storage.charges import NewCharge
from payorch.storage.database import Database
from payorch.storage.sql import Record


@dataclass(frozen=True)
class MerchantFixture:
    id: str
    key: str
    key_id: str
    live_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def live_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.live_key}"}


async def create_merchant(runtime: Runtime, name: str = "Test merchant") -> MerchantFixture:
    async with runtime.db.transaction() as transaction:
        merchant = await repo.insert_merchant(transaction, new_id("mer"), name)
        key = await create_key(transaction, merchant.id, "test")
        live = await create_key(transaction, merchant.id, "live")
    return MerchantFixture(merchant.id, key.secret, key.key_id, live.secret)


async def fetch_rows(db: Database, sql: str, *args: Any) -> list[Record]:
    """Run one statement (``$1``-style placeholders) on its own and return its rows: what an
    operator would type in psql, or a test's look at what was stored."""
    async with db.connection() as connection:
        rows: list[Record] = await connection.fetch(sql, *args)
    return rows


def charge_body(
    token: str = "tok_visa",  # noqa: S107 - a sandbox test token
    *,
    amount: int = 1050,
    currency: str = "usd",
    **extra: Any,
) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "payment_method": {"tokens": {"sandbox": token}}, **extra}


async def post_charge(
    client: httpx.AsyncClient, merchant: MerchantFixture, body: dict[str, Any], *, key: str | None = None
) -> httpx.Response:
    headers = dict(merchant.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/v1/charges", json=body, headers=headers)


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


async def query(db: Database, sql: str, **params: Any) -> list[Record]:
    """A test's own SQL with ``:name`` parameters, run as one statement: its rows (none for a write)."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in order:
            order.append(match.group(1))
        return f"${order.index(match.group(1)) + 1}"

    positional = _NAMED.sub(number, sql)
    return await fetch_rows(db, positional, *(params[name] for name in order))


async def insert_pending_charge(
    runtime: Runtime,
    charge: NewCharge,
    *,
    attempt_id: str,
    gateway: str = "sandbox",
    token: str = "tok_visa",  # noqa: S107
) -> None:
    """A pending charge and its first pending attempt, as a request leaves them just before it calls
    the gateway (a crash there is what the reconciler finds)."""
    async with runtime.db.connection() as connection:
        await charge_writes.open_charge(
            connection,
            charge,
            key=None,
            attempt_id=attempt_id,
            gateway=gateway,
            token=token,
            audit=outbox_params([]),
            created_at=datetime.now(UTC),
        )


async def audit_payloads_naming(runtime: Runtime, needle: str) -> list[dict[str, Any]]:
    """Every audit event still in the outbox whose payload mentions ``needle`` (an object's id)."""
    sql = "SELECT payload FROM audit_outbox WHERE payload::text LIKE :needle"
    rows = await query(runtime.db, sql, needle=f"%{needle}%")
    return [row["payload"] for row in rows]
