"""Engine, sessions, the embedded Postgres server and the migration runner."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_

log = logging.getLogger("payorch.storage")

SessionFactory = async_sessionmaker[AsyncSession]


PING_AFTER_IDLE_SECONDS = 5.0
POOL_TIMEOUT_SECONDS = 10.0


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    write_pool_size: int = 5,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
) -> AsyncEngine:
    """``max_overflow`` None: as many again as ``pool_size`` (the short-lived CLI and tool engines).
    ``write_pool_size``: the connections of the engine's write pool (``driver_connection``)."""
    connect_args: dict[str, Any] = {
        "timeout": 10,
        "command_timeout": 30,
        "server_settings": {"application_name": "payorch"},
    }
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        connect_args=connect_args,
    )
    _ping_when_idle(engine.sync_engine, ping_after_idle)
    _WRITE_POOLS[engine.sync_engine] = WritePool(engine, connect_args, write_pool_size, ping_after_idle)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """``pool_pre_ping``, for connections that sat idle in the pool for ``idle_seconds`` or more.

    SQLAlchemy's asyncpg ping is three round trips (BEGIN, an empty query, ROLLBACK) on every
    checkout: under load that was a third of a charge's round trips (docs/benchmarks.md). A
    connection returned a moment ago is alive; one left idle may have been cut by a database restart,
    a failover or a firewall, and is checked and replaced before anyone uses it. A connection that
    dies while busy fails its statement, and SQLAlchemy then invalidates the pool."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("pooled connection found dead after idling") from error


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def unit_of_work(factory: SessionFactory) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on error. Services and repositories only flush."""
    async with factory() as session, session.begin():
        yield session


class WritePool:
    """A small pool of asyncpg connections beside the engine's, for the charge path's one-statement
    writes.

    Checking a connection out of SQLAlchemy's async pool and back in costs greenlet switches, a
    ``Connection`` object and a shielded close task; asyncpg's own pool costs a proxy object, a
    timeout and a shielded task per release: 7-9% of a served charge's CPU for its three
    statements, either way (docs/benchmarks.md). What single statements need is less: a stack of idle
    connections (the most recently used first) and a semaphore of ``size``. The connections are the
    engine's in every other way: the same URL and connect settings, the same JSON codecs, opened
    only when needed, closed with the engine; one that sat idle for ``ping_after_idle`` seconds is
    checked before use and replaced if it died, and one that a statement left in doubt (cancelled,
    timed out, cut) is closed rather than reused. Its sessions use generic plans (see below)."""

    def __init__(self, engine: AsyncEngine, connect_args: dict[str, Any], size: int, ping_after_idle: float) -> None:
        _, params = engine.dialect.create_connect_args(engine.url)
        for option in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"):
            params.pop(option, None)  # SQLAlchemy's own, not asyncpg's
        # Every statement here is a point write or read keyed by merchant_id (the partition key):
        # plan it once per connection and prune partitions at run time. By default Postgres plans
        # such a statement again on every execution (over 16 partitions a custom plan always
        # looks cheaper than the generic one): about a quarter of its CPU per charge.
        settings = {**connect_args.get("server_settings", {}), "plan_cache_mode": "force_generic_plan"}
        self._connect = {**params, **connect_args, "server_settings": settings}
        self._ping_after_idle = ping_after_idle
        self._slots = asyncio.Semaphore(size)  # connections checked out, or being opened
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # with the time each came back
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await self._checkout()
        reusable = False
        try:
            yield connection
            reusable = True
        except asyncpg.PostgresError as error:
            # The server refused the statement and said so: the connection is as good as before.
            reusable = not isinstance(error, asyncpg.PostgresConnectionError)
            raise
        finally:
            self._checkin(connection, reusable)

    async def _checkout(self) -> asyncpg.Connection:
        if self._closed:
            raise RuntimeError("the write pool is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(POOL_TIMEOUT_SECONDS):
                    await self._slots.acquire()
            except TimeoutError:
                raise TimeoutError(f"no database connection free within {POOL_TIMEOUT_SECONDS:g} s") from None
        else:
            await self._slots.acquire()
        try:
            while self._idle:
                connection, since = self._idle.pop()
                if time.monotonic() - since < self._ping_after_idle:
                    return connection
                try:
                    await connection.execute("SELECT 1")
                except BaseException as error:
                    # Cut while idle (a database restart, a failover, a firewall: OSError, asyncpg's
                    # InterfaceError or InternalClientError...), or cancelled mid-ping: drop it.
                    connection.terminate()
                    if not isinstance(error, Exception):
                        raise
                    continue
                return connection
            connection = await asyncpg.connect(**self._connect)
            try:
                await _json_codecs(connection)
            except BaseException:
                connection.terminate()
                raise
            return connection
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, connection: asyncpg.Connection, reusable: bool) -> None:
        try:
            if reusable and not self._closed and not connection.is_closed() and not connection.is_in_transaction():
                self._idle.append((connection, time.monotonic()))
            else:
                connection.terminate()
        finally:
            self._slots.release()

    async def close(self) -> None:
        """Close the idle connections; one still checked out is closed when it comes back."""
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            try:
                await connection.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
                connection.terminate()

    def terminate(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.terminate()


_WRITE_POOLS: weakref.WeakKeyDictionary[Engine, WritePool] = weakref.WeakKeyDictionary()


async def _json_codecs(connection: asyncpg.Connection) -> None:
    """json and jsonb as SQLAlchemy's asyncpg dialect has them: JSON text in, decoded values out."""
    await connection.set_type_codec(
        "json", encoder=str.encode, decoder=lambda data: json.loads(data.decode()), schema="pg_catalog", format="binary"
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda text: b"\x01" + text.encode(),  # jsonb's binary format: a version byte, then the text
        decoder=lambda data: json.loads(data[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )


@event.listens_for(Engine, "engine_disposed")
def _close_write_pool(engine: Engine) -> None:
    pool = _WRITE_POOLS.get(engine)
    if pool is None:
        return
    try:
        await_(pool.close())  # AsyncEngine.dispose runs this inside its greenlet
    except Exception:
        pool.terminate()


@asynccontextmanager
async def driver_connection(factory: SessionFactory) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection of the engine's write pool, for the charge path's one-statement writes.

    What it saves over a session is SQLAlchemy's per-statement work and the BEGIN/COMMIT round
    trips: a single statement is its own transaction, asyncpg prepares it once per connection (its
    statement cache), and every argument is bound, never spliced. Use it only for statements that
    are complete on their own; jsonb goes in as JSON text and comes back decoded."""
    engine: AsyncEngine = factory.kw["bind"]
    pool = _WRITE_POOLS.get(engine.sync_engine)
    if pool is None:
        raise RuntimeError("driver_connection needs an engine made by payorch.storage.engine.create_engine")
    async with pool.connection() as connection:
        yield connection


from payorch.storage.bootstrap import (  # noqa: E402 - moving: callers switch to bootstrap
    alembic_config,
    migrations_dir,
    redact_url,
    run_migrations,
    start_embedded,
)

__all__ = ["alembic_config", "migrations_dir", "redact_url", "run_migrations", "start_embedded"]
