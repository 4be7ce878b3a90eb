"""The one pool: a connection that sat idle is checked before it is handed out and replaced if it
died; one left in doubt is closed; a checkout waits a bounded time for a free connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from payorch.storage import database as database_module
from payorch.storage.database import Database, DatabaseConfig


@pytest.fixture
async def killer(database_url: str) -> AsyncIterator[Database]:
    """A second pool, to look at and cut the first one's backends from the server's side."""
    db = Database(DatabaseConfig(database_url, pool_size=1))
    yield db
    await db.close()


async def _pid(db: Database) -> int:
    async with db.connection() as connection:
        return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def _terminate(killer: Database, pid: int) -> None:
    """Cut a pooled connection from the server's side, as a database restart would."""
    async with killer.connection() as connection:
        assert await connection.fetchval("SELECT pg_terminate_backend($1)", pid) is True


async def _alive(killer: Database, pid: int) -> bool:
    async with killer.connection() as connection:
        return bool(await connection.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def test_a_connection_reused_at_once_is_not_pinged(database_url: str, killer: Database) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=1, ping_after_idle=3600.0))
    try:
        first = await _pid(db)
        assert await _pid(db) == first  # the same pooled connection, reused
        await _terminate(killer, first)
        # Not idle long enough to be checked: the dead connection fails its statement and is
        # dropped, so the next checkout opens a new connection.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
            await _pid(db)
        assert await _pid(db) != first
    finally:
        await db.close()


async def test_a_connection_cut_while_idle_is_replaced_before_use(database_url: str, killer: Database) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=1, ping_after_idle=0.0))
    try:
        first = await _pid(db)
        assert await _pid(db) == first  # one connection, reused
        await _terminate(killer, first)
        # Idle past ping_after_idle: checked, found dead, replaced before the statement runs.
        second = await _pid(db)
        assert second != first
        assert await _alive(killer, second)
    finally:
        await db.close()


async def test_the_pool_closes_its_connections(database_url: str, killer: Database) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=2))
    pid = await _pid(db)
    assert await _alive(killer, pid)
    await db.close()
    # The backend leaves pg_stat_activity a moment after the connection closes.
    for _ in range(100):
        if not await _alive(killer, pid):
            break
        await asyncio.sleep(0.05)
    assert not await _alive(killer, pid)


async def _refused_statement(db: Database) -> None:
    async with db.connection() as connection:
        await connection.execute("CREATE TEMP TABLE IF NOT EXISTS t (x int PRIMARY KEY)")
        await connection.execute("INSERT INTO t VALUES (1), (1)")  # the error leaves the block


async def test_the_pool_does_not_reuse_a_connection_left_in_doubt(database_url: str) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        first = await _pid(db)
        assert await _pid(db) == first  # reused after a clean statement
        with pytest.raises(asyncpg.UniqueViolationError):
            await _refused_statement(db)
        assert await _pid(db) == first  # the server refused a statement: still good
        async with db.connection() as connection:
            await connection.execute("BEGIN")  # a transaction left open
        second = await _pid(db)
        assert second != first  # closed, not handed out again
        with pytest.raises(TimeoutError):
            async with db.connection() as connection:
                await connection.execute("SELECT pg_sleep(5)", timeout=0.2)  # cancelled mid-statement
        assert await _pid(db) != second
    finally:
        await db.close()


async def _insert_then_fail(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kept VALUES (1)")
        raise RuntimeError("rolled back")


async def test_a_transaction_commits_or_rolls_back_as_a_whole(database_url: str) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        async with db.transaction() as tx:
            await tx.execute("CREATE TEMP TABLE IF NOT EXISTS kept (x int)")
        with pytest.raises(RuntimeError, match="rolled back"):
            await _insert_then_fail(db)
        async with db.connection() as connection:
            assert await connection.fetchval("SELECT count(*) FROM kept") == 0
    finally:
        await db.close()


@pytest.mark.parametrize(("generic", "mode"), [(True, "force_generic_plan"), (False, "auto")])
async def test_the_pool_plans_once_per_connection(database_url: str, generic: bool, mode: str) -> None:
    """Its statements filter on the partition key: a generic plan, pruned at run time (unless
    turned off, as a Citus coordinator needs)."""
    db = Database(DatabaseConfig(database_url, pool_size=1, generic_plans=generic))
    try:
        async with db.connection() as connection:
            assert await connection.fetchval("SHOW plan_cache_mode") == mode
            assert await connection.fetchval("SHOW application_name") == "payorch"
    finally:
        await db.close()


async def test_a_checkout_waits_for_a_free_connection_then_gives_up(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database_module, "CHECKOUT_TIMEOUT_SECONDS", 0.3)
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        async with db.connection() as held:
            waiting = asyncio.create_task(_pid(db))
            await asyncio.sleep(0.05)
            assert not waiting.done()  # queued behind the one connection
        assert await waiting == held.get_server_pid()  # and served by it once it came back
        async with db.connection():
            with pytest.raises(TimeoutError, match=r"no database connection free within 0\.3 s"):
                await _pid(db)
        assert await _pid(db) == held.get_server_pid()  # the pool is whole again
    finally:
        await db.close()
