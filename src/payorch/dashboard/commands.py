"""``payorch users``: dashboard users from the command line (registered by ``payorch.cli``).

Each command acts on ``PAYORCH_DATABASE_URL``, or on the embedded database, as every payorch command
does, and is audited with the operating-system user and host as the actor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from payorch.dashboard.users import DashboardUsers

T = TypeVar("T")

users_app = typer.Typer(help="Dashboard users.", no_args_is_help=True)


@users_app.command("create")
def users_create(
    email: Annotated[str, typer.Option(help="The user's email: what they sign in with.")],
    merchant: Annotated[str | None, typer.Option(help="The merchant the user belongs to (mer_...).")] = None,
    operator: Annotated[bool, typer.Option("--operator", help="An operator: sees every merchant.")] = False,
) -> None:
    """Create a dashboard user and print the password. It is shown this once and stored only as a hash."""
    from payorch.audit import trail

    if (merchant is None) == (not operator):
        raise typer.BadParameter("give --merchant mer_... or --operator (not both)", param_hint="--merchant")
    user, password = _with_users(
        lambda users: users.create(email, merchant_id=merchant, actor=trail.cli_actor(), origin=trail.cli_origin())
    )
    typer.echo(f"{user.id} {user.email} {password}")


@users_app.command("unlock")
def users_unlock(email: Annotated[str, typer.Option(help="The locked user's email.")]) -> None:
    """Clear a user's failed sign-ins and lock now (a lock also ends by itself after lockout_minutes)."""
    from payorch.audit import trail

    user = _with_users(lambda users: users.unlock(email, actor=trail.cli_actor(), origin=trail.cli_origin()))
    if user is None:
        raise typer.BadParameter(f"no dashboard user {email}", param_hint="--email")
    typer.echo(f"unlocked {user.email}")


def _with_users(action: Callable[[DashboardUsers], Awaitable[T]]) -> T:
    from payorch import embedded
    from payorch.dashboard.users import DashboardUsers, UserError
    from payorch.settings import Settings
    from payorch.storage.database import Database, DatabaseConfig

    settings = Settings()
    configured = settings.database_url.get_secret_value() if settings.database_url is not None else None
    url = embedded.database_url(configured, settings.data_dir)

    async def main() -> T:
        db = Database(DatabaseConfig(url, pool_size=1))
        try:
            return await action(DashboardUsers(db, settings.dashboard))
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except UserError as error:
        raise typer.BadParameter(str(error)) from None
