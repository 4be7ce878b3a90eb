"""Starting the database: the embedded Postgres server (DESIGN.md section 1) and the Alembic
migration runner."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import warnings
from pathlib import Path

from alembic import command
from alembic.config import Config

log = logging.getLogger(__name__)


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
