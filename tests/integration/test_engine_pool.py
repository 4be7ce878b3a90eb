"""The pool checks a connection that sat idle before handing it out, and replaces it if it died."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from payorch.storage import engine as engine_module
from payorch.storage.engine import SessionFactory, create_engine, driver_connection, session_factory


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(killer: AsyncEngine, pid: int) -> None:
    """Cut a pooled connection from the server's side, as a database restart would."""
    async with killer.connect() as connection:
        terminated = await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert terminated.scalar_one() is True


async def test_a_connection_reused_at_once_is_not_pinged(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after_idle=3600.0)
    killer = create_engine(database_url, pool_size=1)
    try:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first  # the same pooled connection, reused
        await _terminate(killer, first)
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


@pytest.mark.parametrize("pid_of", [_backend_pid, _write_pool_pid], ids=["sessions", "write_pool"])
async def test_a_connection_cut_while_idle_is_replaced_before_use(
    database_url: str, pid_of: Callable[[AsyncEngine], Awaitable[int]]
) -> None:
    engine = create_engine(database_url, pool_size=1, write_pool_size=1, ping_after_idle=0.0)
    killer = create_engine(database_url, pool_size=1)
    try:
        first = await pid_of(engine)
        assert await pid_of(engine) == first  # one connection, reused
        await _terminate(killer, first)
        # Idle past ping_after_idle: checked, found dead, replaced before the statement runs.
        second = await pid_of(engine)
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


async def _refused_statement(sessions: SessionFactory) -> None:
    async with driver_connection(sessions) as connection:
        await connection.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int PRIMARY KEY)")
        await connection.execute("INSERT INTO t VALUES (1), (1)")  # the error leaves the block


async def test_the_write_pool_does_not_reuse_a_connection_left_in_doubt(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, write_pool_size=1)
    try:
        first = await _write_pool_pid(engine)
        assert await _write_pool_pid(engine) == first  # reused after a clean statement
        sessions = session_factory(engine)
        with pytest.raises(asyncpg.UniqueViolationError):
            await _refused_statement(sessions)
        assert await _write_pool_pid(engine) == first  # the server refused a statement: still good
        async with driver_connection(sessions) as connection:
            await connection.execute("BEGIN")  # a transaction left open
        second = await _write_pool_pid(engine)
        assert second != first  # closed, not handed out again
        with pytest.raises(TimeoutError):
            async with driver_connection(sessions) as connection:
                await connection.execute("SELECT pg_sleep(5)", timeout=0.2)  # cancelled mid-statement
        assert await _write_pool_pid(engine) != second
    finally:
        await engine.dispose()


async def test_the_write_pool_plans_once_per_connection(database_url: str) -> None:
    """Its statements are point writes by partition key: a generic plan, pruned at run time."""
    engine = create_engine(database_url, pool_size=1, write_pool_size=1)
    try:
        async with driver_connection(session_factory(engine)) as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
            assert await connection.fetchval("SHOW application_name") == "payorch"
        async with engine.connect() as connection:  # the engine's own sessions keep the default
            assert (await connection.execute(text("SHOW plan_cache_mode"))).scalar_one() == "auto"
    finally:
        await engine.dispose()


async def test_a_write_waits_for_a_free_connection_then_gives_up(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "POOL_TIMEOUT_SECONDS", 0.3)
    engine = create_engine(database_url, pool_size=1, write_pool_size=1)
    try:
        sessions = session_factory(engine)
        async with driver_connection(sessions) as held:
            waiting = asyncio.create_task(_write_pool_pid(engine))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # queued behind the one connection
        assert await waiting == held.get_server_pid()  # and served by it once it came back
        async with driver_connection(sessions):
            with pytest.raises(TimeoutError, match=r"no database connection free within 0\.3 s"):
                await _write_pool_pid(engine)
        assert await _write_pool_pid(engine) == held.get_server_pid()  # the pool is whole again
    finally:
        await engine.dispose()
