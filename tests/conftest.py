"""The test harness: one freshly migrated Postgres database per test session, real Redis.

Postgres comes from PAYORCH_TEST_DATABASE_URL, else 127.0.0.1:5432 (user postgres), else an embedded
server started here. Tests do not see each other: each makes its own merchant.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy.engine import make_url

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage.bootstrap import run_migrations

pytest_plugins = ["tests.fakes.fixtures", "tests.integration.accounts_support"]

T = TypeVar("T")


def run_in_thread(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on its own loop in its own thread (usable while a test loop is running)."""
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(factory()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def _server_url() -> str:
    explicit = os.environ.get("PAYORCH_TEST_DATABASE_URL")
    if explicit:
        return explicit
    if _port_open("127.0.0.1", 5432):
        return "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    from payorch.storage.bootstrap import start_embedded

    return start_embedded(Path(tempfile.mkdtemp(prefix="payorch-test-pg-")))


async def _admin(url: str, statement: str) -> None:
    import asyncpg

    target = make_url(url)
    dsn = target.set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextmanager
def scratch_database(prefix: str, *, partitions: int) -> Iterator[str]:
    """A database of its own, migrated with the real Alembic migrations, dropped on leaving."""
    server = _server_url()
    name = f"{prefix}_{secrets.token_hex(4)}"
    run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        run_migrations(url, partitions=partitions)
        yield url
    finally:
        run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database, migrated with the real Alembic migrations, dropped at the end."""
    with scratch_database("payorch_test", partitions=16) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ.get("PAYORCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": database_url,
        "api": {"api_key_cache_seconds": 0},
        "reconciler": {"first_check_seconds": 0, "interval_seconds": 0.2},
        "idempotency": {"stale_after_seconds": 60},
        # Every test shares one client IP and many make dozens of charges: limiting is off unless a
        # test turns it on (tests/integration/test_ratelimit_app.py).
        "ratelimit": {"enabled": False},
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def own_app(
    database_url: str, *, peer: tuple[str, int] | None = None, **overrides: Any
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    """A Runtime and an app of a test's own (``make_settings(**overrides)``), called in process."""
    built = await Runtime.build(make_settings(database_url, **overrides), database_url)
    transport = httpx.ASGITransport(app=create_app(built.settings, runtime=built), client=peer or ("127.0.0.1", 123))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
            yield built, client
    finally:
        await built.aclose()


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture(scope="session")
async def runtime(settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    built = await Runtime.build(settings, database_url)
    yield built
    await built.aclose()


@pytest.fixture(scope="session")
async def client(settings: Settings, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield http
