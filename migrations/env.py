"""Async Alembic environment. The URL comes from the caller (``payorch migrate``, tests) through
``config.attributes["url"]``, or from payorch's settings; the partition count through
``config.attributes["partitions"]``, ``-x partitions=N`` or settings.

Autogenerate and ``alembic check`` compare the database with ``payorch.storage.schema.metadata``;
what they leave out and what they compare beyond Alembic's own checks is in
``payorch/storage/schema/drift.py``."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from payorch.storage.schema import drift, metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if url:
        return str(url)
    from payorch.settings import Settings

    settings = Settings()
    if settings.database_url is None:
        raise SystemExit("PAYORCH_DATABASE_URL is unset: use `payorch migrate`, which starts the embedded server")
    return settings.database_url.get_secret_value()


def _do_run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        compare_type=True,
        compare_server_default=True,
        include_name=drift.include_name(connection),
        autogenerate_plugins=["alembic.autogenerate.*", drift.PLUGIN_NAME],
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _do_run(connection)
    else:
        asyncio.run(_run_async())
