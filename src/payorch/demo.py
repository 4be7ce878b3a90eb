"""The embedded mode's first start (`make run`): a demo merchant, a test API key and a dashboard user,
kept in 0600 files under the data directory so that later starts print them again."""

from __future__ import annotations

from pathlib import Path

from payorch.audit import trail
from payorch.audit.events import record_many
from payorch.dashboard.config import DashboardConfig
from payorch.dashboard.users import DashboardUsers
from payorch.ids import new_id
from payorch.security.api_keys import create_key
from payorch.storage import dashboard_users as users_repo
from payorch.storage import merchants as repo
from payorch.storage.database import Database, DatabaseConfig

DEMO_KEY_FILE = "demo-api-key"
DEMO_LOGIN_FILE = "demo-dashboard-login"
DEMO_EMAIL = "demo@payorch.local"


async def ensure_demo(url: str, data_dir: Path) -> tuple[str | None, tuple[str, str] | None]:
    """The demo's test key and its dashboard user's (email, password), each where known; made on the
    first start."""
    key_file = data_dir / DEMO_KEY_FILE
    db = Database(DatabaseConfig(url, pool_size=1))
    try:
        async with db.transaction() as transaction:
            merchant = await repo.first_merchant(transaction)
            key = None
            if merchant is None:
                merchant = await repo.insert_merchant(transaction, new_id("mer"), "Demo merchant")
                key = await create_key(transaction, merchant.id, "test")
                actor, origin, details = trail.cli_actor(), trail.cli_origin(), trail.cli_details(demo=True)
                await record_many(
                    transaction,
                    [
                        trail.merchant_created(
                            actor, merchant_id=merchant.id, name=merchant.name, origin=origin, **details
                        ),
                        trail.api_key_created(
                            actor, merchant_id=merchant.id, key_id=key.key_id, mode=key.mode, origin=origin, **details
                        ),
                    ],
                )
        if key is not None:
            _private_file(key_file, key.secret)
        login = await _ensure_demo_user(db, data_dir, merchant.id)
    finally:
        await db.close()
    secret = key.secret if key is not None else (key_file.read_text().strip() if key_file.exists() else None)
    return secret, login


async def _ensure_demo_user(db: Database, data_dir: Path, merchant_id: str) -> tuple[str, str] | None:
    """The demo merchant's dashboard user, made once (an install from before the dashboard gets one too,
    unless the merchant has users already)."""
    login_file = data_dir / DEMO_LOGIN_FILE
    if login_file.exists():
        email, _, password = login_file.read_text().strip().partition(" ")
        return email, password
    async with db.connection() as connection:
        if await users_repo.count_for_merchant(connection, merchant_id) > 0:
            return None
    users = DashboardUsers(db, DashboardConfig())
    user, password = await users.create(
        DEMO_EMAIL,
        merchant_id=merchant_id,
        actor=trail.cli_actor(),
        origin=trail.cli_origin(),
        **trail.cli_details(demo=True),
    )
    _private_file(login_file, f"{user.email} {password}")
    return user.email, password


def _private_file(path: Path, content: str) -> None:
    path.write_text(content + "\n")
    path.chmod(0o600)
