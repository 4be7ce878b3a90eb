"""Plain typed factories: each test makes its own merchant, so tests never see each other's rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import text

from payorch.ids import new_id
from payorch.runtime import Runtime
from payorch.security.api_keys import create_key
from payorch.storage import merchants as repo
from payorch.storage.engine import unit_of_work


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
    async with unit_of_work(runtime.sessions) as session:
        merchant = await repo.insert_merchant(session, new_id("mer"), name)
        key = await create_key(session, merchant.id, "test")
        live = await create_key(session, merchant.id, "live")
    return MerchantFixture(merchant.id, key.secret, key.key_id, live.secret)


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


async def audit_payloads_naming(runtime: Runtime, needle: str) -> list[dict[str, Any]]:
    """Every audit event still in the outbox whose payload mentions ``needle`` (an object's id)."""
    async with runtime.engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT payload FROM audit_outbox WHERE payload::text LIKE :needle"), {"needle": f"%{needle}%"}
        )
        return [row.payload if isinstance(row.payload, dict) else json.loads(row.payload) for row in rows]
