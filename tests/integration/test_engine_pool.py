"""The pool checks a connection that sat idle before handing it out, and replaces it if it died."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.storage.engine import create_engine


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_cut_while_idle_is_replaced_before_use(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after_idle=0.0)
    killer = create_engine(database_url, pool_size=1)
    try:
        first = await _backend_pid(engine)
        async with killer.connect() as connection:
            terminated = await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            assert terminated.scalar_one() is True
        # The pooled connection is dead: the idle check finds it and the query runs on a new one.
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_a_connection_reused_at_once_is_not_pinged(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after_idle=3600.0)
    killer = create_engine(database_url, pool_size=1)
    try:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first  # the same pooled connection, reused
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        # Not idle long enough to be checked: the dead connection fails its statement, and
        # SQLAlchemy invalidates the pool, so the next checkout opens a new connection.
        with pytest.raises(DBAPIError):
            await _backend_pid(engine)
        assert await _backend_pid(engine) != first
    finally:
        await engine.dispose()
        await killer.dispose()
