"""The floor of payorch's stack: FastAPI on uvicorn doing only what any charge API on it must do.

``POST /v1/charges`` parses a small JSON body into a pydantic model, spends one rate-limit decision
on Redis (payorch's own sliding-window Lua script: one EVALSHA round trip), INSERTs a pending row
into a 16-way hash-partitioned table and UPDATEs it to succeeded (two autocommit statements, as a
charge is written before and after its gateway call), and answers the row as JSON. No auth, no
idempotency, no gateway, no audit: whatever payorch costs above this is payorch's own work.

Served by ``bench/charges_bench.py`` in the same invocation as payorch:

    BASELINE_DATABASE_URL=postgresql+asyncpg://... BASELINE_REDIS_URL=redis://127.0.0.1:6379/0 \
        uvicorn baseline_app:create_app --factory --app-dir bench --port 18081
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from payorch.ratelimit import RedisLimiter

TABLE = "bench_baseline_charges"
PARTITIONS = 16
MERCHANT_ID = "mer_baseline"

SCHEMA = [
    f"""
    CREATE TABLE IF NOT EXISTS {TABLE} (
        id           text NOT NULL,
        merchant_id  text NOT NULL,
        amount       bigint NOT NULL,
        currency     text NOT NULL,
        status       text NOT NULL,
        created_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (merchant_id, id)
    ) PARTITION BY HASH (merchant_id)
    """,
    *(
        f"CREATE TABLE IF NOT EXISTS {TABLE}_p{r:03d} PARTITION OF {TABLE} "
        f"FOR VALUES WITH (MODULUS {PARTITIONS}, REMAINDER {r})"
        for r in range(PARTITIONS)
    ),
]

INSERT = text(
    "INSERT INTO bench_baseline_charges (id, merchant_id, amount, currency, status) "
    "VALUES (:id, :merchant_id, :amount, :currency, 'pending')"
)
UPDATE = text(
    "UPDATE bench_baseline_charges SET status = 'succeeded', updated_at = now() "
    "WHERE merchant_id = :merchant_id AND id = :id RETURNING created_at"
)


async def ensure_schema(url: str) -> None:
    """Create the baseline's own table (called by the bench before the server starts)."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in SCHEMA:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


class ChargeIn(BaseModel):
    amount: int = Field(gt=0)
    currency: str = Field(min_length=3, max_length=3)
    payment_method: dict[str, Any]


def create_app() -> FastAPI:
    database_url = os.environ["BASELINE_DATABASE_URL"]
    redis_url = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/0")
    pool_size = int(os.environ.get("BASELINE_POOL_SIZE", "20"))
    max_overflow = int(os.environ.get("BASELINE_MAX_OVERFLOW", "0"))
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine: AsyncEngine = create_async_engine(database_url, pool_size=pool_size, max_overflow=max_overflow)
        redis = Redis.from_url(redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        state["engine"], state["limiter"] = engine, RedisLimiter(redis, prefix="rl_baseline")
        try:
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(title="baseline", lifespan=lifespan)

    @app.post("/v1/charges", status_code=201)
    async def create_charge(request: Request, charge: ChargeIn) -> Response:
        decision = await state["limiter"].hit(request.headers.get("authorization", "anonymous"), 1_000_000, 60)
        if not decision.allowed:
            return Response(b'{"error":"rate_limited"}', status_code=429, media_type="application/json")
        charge_id = "ch_" + secrets.token_hex(13)
        params = {"id": charge_id, "merchant_id": MERCHANT_ID, "amount": charge.amount, "currency": charge.currency}
        engine: AsyncEngine = state["engine"]
        async with engine.begin() as connection:
            await connection.execute(INSERT, params)
        async with engine.begin() as connection:
            created = (await connection.execute(UPDATE, params)).scalar_one()
        body = {
            "id": charge_id,
            "object": "charge",
            "amount": charge.amount,
            "currency": charge.currency.lower(),
            "status": "succeeded",
            "created": int(created.timestamp()),
        }
        return Response(
            json.dumps(body, separators=(",", ":")).encode(), status_code=201, media_type="application/json"
        )

    return app
