"""The one pool of database connections, owned by the Runtime and passed to every service.

A stack of idle asyncpg connections (the most recently used first) and a semaphore of ``size``:
what single statements and short transactions need, and no more (asyncpg's own pool, and
SQLAlchemy's, cost a proxy object, a timeout and a shielded task per checkout; docs/benchmarks.md).
Connections are opened only when needed and closed with the Database. One that sat idle for
``ping_after_idle`` seconds is checked before use and replaced if it died (a database restart, a
failover, a firewall); one that a statement left in doubt (cancelled, timed out, cut) is closed
rather than reused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url

from payorch import jsontext
from payorch.storage.sql import Connection

CHECKOUT_TIMEOUT_SECONDS = 10.0
PING_AFTER_IDLE_SECONDS = 5.0

DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What talking to the database raises when it refused a statement or could not be reached (cut,
down, no connection free in time): what a background loop survives and retries."""


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str
    """``postgresql+asyncpg://...`` (SQLAlchemy's form, as the settings and Alembic take it)."""
    pool_size: int = 10
    generic_plans: bool = True
    """Plan each statement once per connection and prune partitions at run time. Every statement
    filters on merchant_id, the partition key: by default Postgres plans such a statement again on
    every execution (over 16 partitions a custom plan always looks cheaper than the generic one),
    about a quarter of its CPU per charge (docs/benchmarks.md)."""
    application_name: str = "payorch"
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS
    connect_timeout: float = 10.0
    command_timeout: float = 30.0


def connect_params(config: DatabaseConfig) -> dict[str, Any]:
    """asyncpg.connect's keyword arguments for ``config`` (host, port, user, database, a Unix socket
    in ``?host=``, ...), parsed the way SQLAlchemy's asyncpg dialect parses the URL."""
    _, params = asyncpg_dialect().create_connect_args(make_url(config.url))  # type: ignore[no-untyped-call]
    for option in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"):
        params.pop(option, None)  # SQLAlchemy's own, not asyncpg's
    settings = {"application_name": config.application_name}
    if config.generic_plans:
        settings["plan_cache_mode"] = "force_generic_plan"
    return {
        **params,
        "timeout": config.connect_timeout,
        "command_timeout": config.command_timeout,
        "statement_cache_size": 1024,
        "server_settings": settings,
    }


async def _json_codecs(connection: Connection) -> None:
    """json and jsonb as Python values in and out (orjson both ways)."""
    await connection.set_type_codec(
        "json", encoder=jsontext.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    await connection.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + jsontext.dumps(value),  # jsonb's binary format: a version byte, then text
        decoder=lambda data: orjson.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )


async def open_connection(config: DatabaseConfig) -> Connection:
    connection: Connection = await asyncpg.connect(**connect_params(config))
    try:
        await _json_codecs(connection)
    except BaseException:
        connection.terminate()
        raise
    return connection


_IN_DOUBT = (
    asyncio.CancelledError,
    TimeoutError,
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What leaves a connection in an unknown state: cut short mid-statement, or cut off."""


class Database:
    def __init__(self, config: DatabaseConfig) -> None:
        self.config = config
        self._slots = asyncio.Semaphore(config.pool_size)  # connections checked out, or being opened
        self._idle: list[tuple[Connection, float]] = []  # with the time each came back
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; each statement on it is its own transaction."""
        connection = await self._checkout()
        reusable = False
        try:
            yield connection
            reusable = True
        except _IN_DOUBT:
            # Cut short mid-statement, or cut off: what the connection is in now is not known.
            raise
        except Exception:
            # The server refused a statement and said so, or the caller's own rule failed between
            # statements (a transaction's block rolls back first): the connection is as good as before.
            reusable = True
            raise
        finally:
            self._checkin(connection, reusable)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A short transaction on a pooled connection: committed when the block ends, rolled back
        if it raises. Never hold one across a gateway call."""
        async with self.connection() as connection, connection.transaction():
            yield connection

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[Connection]:
        """A connection of its own, outside the pool: for LISTEN and session-level advisory locks."""
        connection = await open_connection(self.config)
        try:
            yield connection
        finally:
            try:
                await asyncio.wait_for(connection.close(), timeout=5)
            except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresError):
                connection.terminate()

    async def ping(self) -> None:
        async with self.connection() as connection:
            await connection.execute("SELECT 1")

    async def _checkout(self) -> Connection:
        if self._closed:
            raise RuntimeError("the database pool is closed")
        if self._slots.locked():
            try:
                async with asyncio.timeout(CHECKOUT_TIMEOUT_SECONDS):
                    await self._slots.acquire()
            except TimeoutError:
                raise TimeoutError(f"no database connection free within {CHECKOUT_TIMEOUT_SECONDS:g} s") from None
        else:
            await self._slots.acquire()
        try:
            while self._idle:
                connection, since = self._idle.pop()
                if time.monotonic() - since < self.config.ping_after_idle:
                    return connection
                try:
                    await connection.execute("SELECT 1")
                except BaseException as error:
                    # Cut while idle (OSError, asyncpg's InterfaceError or InternalClientError...),
                    # or cancelled mid-ping: drop it.
                    connection.terminate()
                    if not isinstance(error, Exception):
                        raise
                    continue
                return connection
            return await open_connection(self.config)
        except BaseException:
            self._slots.release()
            raise

    def _checkin(self, connection: Connection, reusable: bool) -> None:
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


__all__ = ["DATABASE_ERRORS", "Connection", "Database", "DatabaseConfig", "open_connection"]
