"""The pool checks a connection that sat idle before handing it out, and replaces it if it died."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.storage.engine import create_engine, driver_connection, session_factory


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


async def _write_pool_pid(engine: AsyncEngine) -> int:
    async with driver_connection(session_factory(engine)) as connection:
        return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def _alive(killer: AsyncEngine, pid: int) -> bool:
    async with killer.connect() as connection:
        found = await connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})
        return bool(found.scalar_one())


async def test_the_write_pool_replaces_a_connection_cut_while_idle(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, write_pool_size=1, ping_after_idle=0.0)
    killer = create_engine(database_url, pool_size=1)
    try:
        first = await _write_pool_pid(engine)
        assert await _write_pool_pid(engine) == first  # one connection, reused
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        # Idle past ping_after_idle: checked, found dead, replaced before the statement runs.
        second = await _write_pool_pid(engine)
        assert second != first
        assert await _alive(killer, second)
    finally:
        await engine.dispose()
        await killer.dispose()


async def test_the_write_pool_closes_with_its_engine(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, write_pool_size=2)
    killer = create_engine(database_url, pool_size=1)
    try:
        pid = await _write_pool_pid(engine)
        assert await _alive(killer, pid)
        await engine.dispose()
        # Closed by the engine's dispose; the backend leaves pg_stat_activity a moment later.
        for _ in range(100):
            if not await _alive(killer, pid):
                break
            await asyncio.sleep(0.05)
        assert not await _alive(killer, pid)
    finally:
        await killer.dispose()


async def test_the_write_pool_rolls_back_a_transaction_left_open(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, write_pool_size=1)
    try:
        sessions = session_factory(engine)
        async with driver_connection(sessions) as connection:
            await connection.execute("BEGIN")
            assert connection.is_in_transaction()
        async with driver_connection(sessions) as connection:
            assert not connection.is_in_transaction()  # the same connection, back in autocommit
    finally:
        await engine.dispose()
