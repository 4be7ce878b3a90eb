"""Engine, sessions, the embedded Postgres server and the migration runner."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

log = logging.getLogger("payorch.storage")

SessionFactory = async_sessionmaker[AsyncSession]


PING_AFTER_IDLE_SECONDS = 5.0


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int | None = None, ping_after_idle: float = PING_AFTER_IDLE_SECONDS
) -> AsyncEngine:
    """``max_overflow`` None: as many again as ``pool_size`` (the short-lived CLI and tool engines)."""
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=10,
        connect_args={"timeout": 10, "command_timeout": 30, "server_settings": {"application_name": "payorch"}},
    )
    _ping_when_idle(engine.sync_engine, ping_after_idle)
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


@asynccontextmanager
async def driver_connection(factory: SessionFactory) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection's own asyncpg connection, for the charge path's one-statement writes.

    Same pool, same idle ping as the sessions; what it saves is SQLAlchemy's per-statement work and
    the BEGIN/COMMIT round trips: a single statement is its own transaction, asyncpg prepares it
    once per connection (its statement cache), and every argument is bound, never spliced. Use it
    only for statements that are complete on their own; jsonb goes in as JSON text and comes back
    decoded (the dialect's codecs)."""
    engine: AsyncEngine = factory.kw["bind"]
    async with engine.connect() as connection:
        pooled = await connection.get_raw_connection()
        driver: asyncpg.Connection = pooled.driver_connection
        try:
            yield driver
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            # The connection broke under us: the pool must not hand it out again.
            await connection.invalidate()
            raise


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded Postgres under ``data_dir`` and return its asyncpg URL."""
    # pgserver logs every initdb line at INFO and platformdirs warns when XDG_RUNTIME_DIR is unset:
    # neither helps someone running `make run`.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        import pgserver

        pgdata = (data_dir / "pgdata").resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        log.info("starting the embedded Postgres under %s", pgdata)
        server = pgserver.get_server(str(pgdata))  # type: ignore[attr-defined]
    uri: str = server.get_uri()
    # pgserver answers on a Unix socket in pgdata: postgresql://postgres:@/postgres?host=/path
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1)


def migrations_dir() -> Path:
    """Where the Alembic scripts live: ``PAYORCH_MIGRATIONS_DIR``, the source checkout, or ./migrations."""
    override = os.environ.get("PAYORCH_MIGRATIONS_DIR")
    if override:
        return Path(override)
    checkout = Path(__file__).resolve().parents[3] / "migrations"
    if checkout.is_dir():
        return checkout
    return Path.cwd() / "migrations"


def alembic_config(url: str, *, partitions: int | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["url"] = url
    if partitions is not None:
        config.attributes["partitions"] = partitions
    return config


def run_migrations(url: str, *, partitions: int | None = None, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Safe to call from inside a running event loop."""
    config = alembic_config(url, partitions=partitions)
    # Alembic announces its context on every run; only upgrades are worth a line.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        command.upgrade(config, revision)
        return
    # Alembic's async env calls asyncio.run(), which cannot nest: run it on its own thread.
    errors: list[BaseException] = []

    def target() -> None:
        try:
            command.upgrade(config, revision)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="payorch-migrate")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def redact_url(url: str) -> str:
    """The URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
