"""The ``payorch`` command: serve, worker, migrate, merchants, keys, users."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from payorch.dashboard.commands import users_app
from payorch.settings import Settings

if TYPE_CHECKING:
    from payorch.audit.events import AuditEvent
    from payorch.storage.database import Database
    from payorch.storage.sql import Connection

app = typer.Typer(help="payorch: payment orchestration.", no_args_is_help=True, add_completion=False)
merchants_app = typer.Typer(help="Manage merchants.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(merchants_app, name="merchants")
app.add_typer(keys_app, name="keys")
webhooks_app = typer.Typer(help="Webhook deliveries.", no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
audit_app = typer.Typer(help="The audit trail.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
bank_links_app = typer.Typer(help="Bank links (OAuth).", no_args_is_help=True)
app.add_typer(bank_links_app, name="bank-links")
app.add_typer(users_app, name="users")

T = TypeVar("T")


def _settings() -> Settings:
    return Settings()


def database_url(settings: Settings) -> str:
    """PAYORCH_DATABASE_URL, or the embedded server under the data directory (started if needed)."""
    from payorch import embedded

    configured = settings.database_url.get_secret_value() if settings.database_url is not None else None
    return embedded.database_url(configured, settings.data_dir)


@app.command()
def migrate(partitions: Annotated[int | None, typer.Option(help="Hash partitions per money table.")] = None) -> None:
    """Apply the database migrations (Alembic upgrade head)."""
    from payorch.audit import trail
    from payorch.storage.bootstrap import run_migrations

    settings = _settings()
    url = database_url(settings)
    run_migrations(url, partitions=partitions or settings.partitions)
    asyncio.run(_record_cli_event(url, trail.database_migrated(partitions=partitions or settings.partitions)))
    typer.echo("migrations applied")


def _banner(host: str, port: int, key: str | None, login: tuple[str, str] | None = None) -> str:
    base = f"http://{host}:{port}"
    lines = [f"payorch is listening on {base}  (API docs: {base}/docs)"]
    if login:
        lines += [f"Dashboard: {base}/dashboard  (sign in as {login[0]} with password {login[1]})"]
    if key:
        lines += [
            f"Test API key: {key}",
            "Create a charge:",
            f"  curl -s {base}/v1/charges -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\",
            '    -H "Idempotency-Key: $(date +%s%N)" \\',
            """    -d '{"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}}'""",
        ]
    return "\n".join(lines)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (more than 1 needs a database URL).")] = 1,
) -> None:
    """Serve the API. With no configuration: the embedded Postgres under ./.payorch/."""
    import uvicorn

    from payorch.app import create_app
    from payorch.demo import ensure_demo
    from payorch.observability.logging import configure_logging
    from payorch.security.slow_clients import guarded_http_protocol
    from payorch.storage.bootstrap import run_migrations

    settings = _settings()
    configure_logging(json_lines=settings.json_logs)
    url = database_url(settings)
    key, login = None, None
    if settings.embedded:
        run_migrations(url, partitions=settings.partitions)
        key, login = asyncio.run(ensure_demo(url, settings.data_dir))
    bind_host, bind_port = host or settings.host, port or settings.port
    typer.echo(_banner(bind_host, bind_port, key, login))
    if workers > 1 and settings.embedded:
        raise typer.BadParameter("several workers need PAYORCH_DATABASE_URL", param_hint="--workers")
    if workers > 1:  # each worker process opens the operations listener: they share its port
        os.environ["PAYORCH_METRICS__REUSE_PORT"] = "true"
    uvicorn.run(
        # Each worker process builds its own app from the environment.
        "payorch.app:app_from_environment" if workers > 1 else create_app(settings, database_url=url),
        factory=workers > 1,
        workers=workers,
        host=bind_host,
        port=bind_port,
        log_config=None,
        timeout_graceful_shutdown=20,
        server_header=False,
        # payorch's own ratelimit.trusted_proxies decides the client address (ratelimit/middleware.py);
        # uvicorn's default would believe X-Forwarded-For from any loopback peer.
        proxy_headers=False,
        access_log=False,  # the app logs each request itself, with its id, merchant and route template
        # Slow clients: idle keep-alive, request head (slowloris) and size limits; the body's own
        # deadline is in the app's middleware.
        timeout_keep_alive=settings.api.keep_alive_seconds,
        http=guarded_http_protocol(
            header_timeout=settings.api.header_timeout_seconds, max_header_bytes=settings.api.max_header_bytes
        ),
    )


@app.command()
def worker() -> None:
    """Run the background loops: the reconciler and the idempotency purge (any number of workers)."""
    from payorch.api.ops import OpsListener
    from payorch.observability.logging import configure_logging
    from payorch.runtime import Runtime

    settings = _settings()
    configure_logging(json_lines=settings.json_logs)
    url = database_url(settings)

    async def main() -> None:
        runtime = await Runtime.build(settings, url)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: asyncio.ensure_future(runtime.aclose()))
        runtime.start_background()
        listener = OpsListener.for_settings(settings, runtime, jobs=runtime.background_states)
        try:
            if listener is not None:
                await listener.start()
            # Announced once SIGTERM is handled: a signal that came before would end the process at once.
            typer.echo("payorch worker started")
            with contextlib.suppress(asyncio.CancelledError):
                await runtime.wait_background()
        finally:
            if listener is not None:
                await listener.stop()
            await runtime.aclose()

    asyncio.run(main())


@app.command()
def reconcile() -> None:
    """Resolve every due unknown or abandoned attempt once, then exit."""
    from payorch.audit import trail
    from payorch.audit.events import record
    from payorch.runtime import Runtime

    settings = _settings()
    url = database_url(settings)

    async def main() -> None:
        runtime = await Runtime.build(settings, url)
        try:
            decisions = await runtime.reconciler.run_once()
            async with runtime.db.transaction() as transaction:
                await record(transaction, trail.reconciler_run([decision.action for decision in decisions]))
        finally:
            await runtime.aclose()
        for decision in decisions:
            typer.echo(f"{decision.object_id} {decision.charge_id} {decision.action}")
        typer.echo(f"{len(decisions)} attempts looked up")

    asyncio.run(main())


@merchants_app.command("create")
def merchants_create(name: Annotated[str, typer.Option(help="The merchant's name.")]) -> None:
    """Create a merchant and print its id."""
    from payorch.audit import trail
    from payorch.audit.events import record
    from payorch.ids import new_id
    from payorch.storage import merchants as repo

    async def action(transaction: Connection) -> str:
        merchant = await repo.insert_merchant(transaction, new_id("mer"), name)
        event = trail.merchant_created(
            trail.cli_actor(), merchant_id=merchant.id, name=name, origin=trail.cli_origin(), **trail.cli_details()
        )
        await record(transaction, event)
        return merchant.id

    typer.echo(_in_transaction(action))


@keys_app.command("create")
def keys_create(
    merchant: Annotated[str, typer.Option(help="The merchant id (mer_...).")],
    mode: Annotated[str, typer.Option(help="test or live.")] = "test",
) -> None:
    """Create an API key and print it. It is shown this once and stored only as a hash."""
    from payorch.audit import trail
    from payorch.security.api_keys import issue_key
    from payorch.storage import merchants as repo

    if mode not in ("test", "live"):
        raise typer.BadParameter("mode must be test or live", param_hint="--mode")

    async def action(transaction: Connection) -> str:
        if await repo.get_merchant(transaction, merchant) is None:
            raise typer.BadParameter(f"no merchant {merchant}", param_hint="--merchant")
        key = await issue_key(
            transaction,
            merchant,
            "live" if mode == "live" else "test",
            trail.cli_actor(),
            trail.cli_origin(),
            **trail.cli_details(),
        )
        return f"{key.key_id} {key.secret}"

    typer.echo(_in_transaction(action))


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (key_...).")]) -> None:
    """Revoke an API key at once (API processes stop accepting it within their key cache TTL)."""
    from payorch.audit import trail
    from payorch.security.api_keys import revoke_key

    async def action(transaction: Connection) -> str:
        if (
            await revoke_key(transaction, key_id, trail.cli_actor(), origin=trail.cli_origin(), **trail.cli_details())
            is None
        ):
            raise typer.BadParameter(f"no active key {key_id}", param_hint="KEY_ID")
        return f"revoked {key_id}"

    typer.echo(_in_transaction(action))


@audit_app.command("verify")
def audit_verify(
    sink: Annotated[
        str | None, typer.Option(help="local, s3 or cloudtrail (default: every configured sink that can be read).")
    ] = None,
) -> None:
    """Re-read a sink, recompute the hash chain against the database's, and name the first gap,
    reorder or altered event, and every position the sink and the database's chain do not share.
    Exits 1 on any problem. The verification is itself recorded on the trail."""
    from payorch.audit.verify import record_verification, verification_event, verify_configured

    settings = _settings()
    try:
        url: str | None = database_url(settings)
    except Exception as exc:  # verify a sink even when the database is out of reach
        typer.echo(f"database unreachable ({type(exc).__name__}): verifying without its chain hashes", err=True)
        url = None
    results = asyncio.run(verify_configured(settings.audit, data_dir=settings.data_dir, database_url=url, sink=sink))
    for line in results.lines:
        typer.echo(line)
    if url is not None and results.database_reached:  # reading the trail is itself audited (PCI DSS 10.2.1.3)
        try:
            event = verification_event(results, sink)
            _in_transaction(lambda transaction: record_verification(transaction, results, event), url=url)
        except Exception as exc:  # the verdict stands; only its record is missing
            typer.echo(f"the verification could not be recorded on the trail ({type(exc).__name__})", err=True)
    raise typer.Exit(0 if results.ok else 1)


@bank_links_app.command("refresh")
def bank_links_refresh(
    link_id: Annotated[str, typer.Argument(help="The bank link id (bl_...).")],
    merchant: Annotated[
        str | None, typer.Option(help="The owning merchant (mer_...); found from the link if omitted.")
    ] = None,
) -> None:
    """Trade the link's stored refresh token for an access token (storing a rotated refresh token as
    a new secret version). Prints the outcome, never a token."""
    from payorch.audit import trail
    from payorch.errors import ApiError
    from payorch.runtime import Runtime
    from payorch.storage import bank_links as repo

    settings = _settings()
    url = database_url(settings)

    async def main() -> str:
        runtime = await Runtime.build(settings, url)
        try:
            if runtime.bank_links is None:
                raise typer.BadParameter("bank linking is not configured (PAYORCH_BANKING__PROVIDER...)")
            owner = merchant
            if owner is None:
                async with runtime.db.connection() as connection:
                    owner = await repo.merchant_of(connection, link_id)
            if owner is None:
                raise typer.BadParameter(f"No such bank link: {link_id}", param_hint="LINK_ID")
            try:
                token = await runtime.bank_links.refresh(
                    owner, link_id, actor=trail.cli_actor(owner), origin=trail.cli_origin()
                )
            except ApiError as exc:
                raise typer.BadParameter(exc.message, param_hint="LINK_ID") from None
        finally:
            await runtime.aclose()
        lifetime = f"valid for {token.expires_in} s" if token.expires_in is not None else "lifetime not stated"
        rotation = "refresh token rotated (new secret version stored)" if token.rotated else "refresh token unchanged"
        return f"refreshed {link_id}: access token {lifetime}; {rotation}"

    typer.echo(asyncio.run(main()))


@webhooks_app.command("redeliver")
def webhooks_redeliver(delivery_id: Annotated[str, typer.Argument(help="The delivery id (whd_...).")]) -> None:
    """Queue a webhook delivery again now (e.g. dead-lettered), with a fresh retry window and the same
    webhook-id; a running worker sends it."""
    from payorch.audit import trail
    from payorch.runtime import Runtime

    settings = _settings()
    url = database_url(settings)

    async def main() -> str | None:
        runtime = await Runtime.build(settings, url)
        try:
            delivery = await runtime.webhooks.endpoints.redeliver_by_id(
                delivery_id, operator=trail.cli_actor().user or "cli", origin=trail.cli_origin()
            )
        finally:
            await runtime.aclose()
        return None if delivery is None else delivery.id

    if asyncio.run(main()) is None:
        raise typer.BadParameter(f"no delivery {delivery_id} to a live endpoint", param_hint="DELIVERY_ID")
    typer.echo(f"queued {delivery_id}")


@asynccontextmanager
async def _database(url: str) -> AsyncIterator[Database]:
    """One connection's worth of pool, for a command's few statements."""
    from payorch.storage.database import Database, DatabaseConfig

    db = Database(DatabaseConfig(url, pool_size=1))
    try:
        yield db
    finally:
        await db.close()


async def _record_cli_event(url: str, event: AuditEvent) -> None:
    """A CLI action's own audit event, in a transaction of its own."""
    from payorch.audit.events import record

    async with _database(url) as db, db.transaction() as transaction:
        await record(transaction, event)


def _in_transaction(action: Callable[[Connection], Awaitable[T]], *, url: str | None = None) -> T:
    target = url or database_url(_settings())

    async def main() -> T:
        async with _database(target) as db, db.transaction() as transaction:
            return await action(transaction)

    return asyncio.run(main())


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


accounts_app = typer.Typer(help="Merchants' gateway accounts.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")


@accounts_app.command("rotate-key")
def accounts_rotate_key(
    new_local_key: Annotated[
        bool, typer.Option("--new-local-key", help="Embedded mode: make a new local master key current first.")
    ] = False,
) -> None:
    """Re-wrap every account's data key with the current master key (with KMS: set
    PAYORCH_ACCOUNTS__KMS__KEY_ID to the new key on every process first). Charges go on throughout:
    each row is readable under its old key until it is re-wrapped. Prints counts, never a key."""
    from payorch.accounts.crypto import LocalKeyWrapper, SealingRefused
    from payorch.runtime import Runtime

    settings = _settings()
    url = database_url(settings)

    async def main() -> str:
        runtime = await Runtime.build(settings, url)
        try:
            wrapper = runtime.directory.wrapper
            if new_local_key:
                if not isinstance(wrapper, LocalKeyWrapper):
                    raise typer.BadParameter("--new-local-key is for the local key; with KMS set the new key id")
                wrapper.new_key()
            count = await runtime.accounts.rotate()
            return f"re-wrapped {count} account data keys with {await wrapper.current_key_id()}"
        except SealingRefused as error:
            raise typer.BadParameter(str(error)) from None
        finally:
            await runtime.aclose()

    typer.echo(asyncio.run(main()))
