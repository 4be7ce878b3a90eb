"""Dashboard users: creating them, signing in (with lockout), signing out, unlocking.

Passwords are hashed with Argon2id (argon2-cffi's defaults: RFC 9106's second recommended
parameters), off the event loop. Every sign-in, failed sign-in, lock, unlock and sign-out is an
audit event written in the same transaction as the row change it records. No FastAPI here: the CLI
and the web console both call this.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Outcome, Resource, record, record_many
from payorch.dashboard.config import DashboardConfig
from payorch.ids import new_id
from payorch.storage import dashboard_users as repo
from payorch.storage import merchants as merchants_repo
from payorch.storage.dashboard_users import DashboardUser
from payorch.storage.database import Database

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,189}$")


class UserError(ValueError):
    """A user that cannot be created or found as asked (the CLI prints it)."""


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively: stored and looked up lower-case."""
    normalized = email.strip().lower()
    if not _EMAIL.match(normalized):
        raise UserError(f"not an email address: {email!r}")
    return normalized


def new_password() -> str:
    """24 URL-safe characters (144 random bits), shown once."""
    return secrets.token_urlsafe(18)


def actor_name(user: DashboardUser) -> str:
    """How the audit trail names a dashboard user."""
    return f"dashboard:{user.email}"


def actor_of(user: DashboardUser, merchant_id: str | None = None) -> Actor:
    return Actor(merchant_id=merchant_id or user.merchant_id, user=actor_name(user))


def _user_event(
    action: str,
    actor: Actor,
    user_id: str,
    origin: Origin | None,
    outcome: Outcome = "success",
    details: dict[str, object] | None = None,
) -> AuditEvent:
    return AuditEvent(
        actor=actor,
        action=action,
        resource=Resource(type="dashboard_user", id=user_id),
        outcome=outcome,
        origin=origin or Origin(),
        details=details or {},
    )


@dataclass(frozen=True, slots=True)
class SignIn:
    user: DashboardUser | None
    """The signed-in user; None when refused."""
    refusal: Literal["invalid", "locked"] | None = None
    locked_until: datetime | None = None


class DashboardUsers:
    def __init__(self, db: Database, config: DashboardConfig, hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self._config = config
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    async def create(
        self, email: str, *, merchant_id: str | None, actor: Actor, origin: Origin | None = None, **details: object
    ) -> tuple[DashboardUser, str]:
        """A merchant's user (or an operator when ``merchant_id`` is None) with a new password,
        returned this once; only its hash is stored."""
        address = normalize_email(email)
        password = new_password()
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        async with self._db.transaction() as transaction:
            if merchant_id is not None and await merchants_repo.get_merchant(transaction, merchant_id) is None:
                raise UserError(f"no merchant {merchant_id}")
            try:
                user = await repo.insert_user(
                    transaction,
                    user_id=new_id("du"),
                    merchant_id=merchant_id,
                    email=address,
                    password_hash=password_hash,
                )
            except asyncpg.UniqueViolationError:
                raise UserError(f"a dashboard user {address} exists already") from None
            event = _user_event(
                AuditAction.DASHBOARD_USER_CREATED,
                actor.model_copy(update={"merchant_id": merchant_id}),
                user.id,
                origin,
                details={"role": user.role, "email": address, **details},
            )
            await record(transaction, event)
        return user, password

    async def get(self, user_id: str) -> DashboardUser | None:
        async with self._db.connection() as connection:
            return await repo.get_user(connection, user_id)

    async def sign_in(self, email: str, password: str, origin: Origin) -> SignIn:
        """Check a password. A locked user is refused without looking at it; the failure that
        reaches the threshold locks the user. An unknown email costs the same hashing time."""
        try:
            address = normalize_email(email)
        except UserError:
            address = None
        async with self._db.connection() as connection:
            user = None if address is None else await repo.find_by_email(connection, address)
        if user is None:
            await self._verify(await self._dummy(), password)
            await self._record_unknown(email, origin)
            return SignIn(None, "invalid")
        now = datetime.now(UTC)
        if user.locked_until is not None and user.locked_until > now:
            await self._record(AuditAction.DASHBOARD_USER_SIGN_IN_FAILED, user, origin, {"reason": "locked"})
            return SignIn(None, "locked", user.locked_until)
        if not await self._verify(user.password_hash, password):
            return await self._failed(user, origin)
        async with self._db.transaction() as transaction:
            await repo.record_sign_in(transaction, user.id)
            event = _user_event(AuditAction.DASHBOARD_USER_SIGNED_IN, actor_of(user), user.id, origin)
            await record(transaction, event)
        return SignIn(user)

    async def sign_out(self, user: DashboardUser, origin: Origin) -> None:
        """End every session of the user: cookies issued before now stop working."""
        async with self._db.transaction() as transaction:
            await repo.end_sessions(transaction, user.id)
            event = _user_event(AuditAction.DASHBOARD_USER_SIGNED_OUT, actor_of(user), user.id, origin)
            await record(transaction, event)

    async def unlock(
        self, email: str, *, actor: Actor, origin: Origin | None = None, **details: object
    ) -> DashboardUser | None:
        """Clear a user's failed sign-ins and lock (an operator's reset)."""
        async with self._db.transaction() as transaction:
            user = await repo.unlock(transaction, normalize_email(email))
            if user is not None:
                who = actor.model_copy(update={"merchant_id": user.merchant_id})
                event = _user_event(AuditAction.DASHBOARD_USER_UNLOCKED, who, user.id, origin, details=dict(details))
                await record(transaction, event)
        return user

    async def _failed(self, user: DashboardUser, origin: Origin) -> SignIn:
        config = self._config
        async with self._db.transaction() as transaction:
            failed = await repo.record_failed_sign_in(
                transaction, user.id, threshold=config.lockout_threshold, lock_seconds=config.lockout_minutes * 60
            )
            events = [
                _user_event(
                    AuditAction.DASHBOARD_USER_SIGN_IN_FAILED,
                    actor_of(user),
                    user.id,
                    origin,
                    "failure",
                    {"reason": "password", "failed_sign_ins": failed.failed_sign_ins},
                )
            ]
            if failed.locked_now:
                events.append(
                    _user_event(
                        AuditAction.DASHBOARD_USER_LOCKED,
                        actor_of(user),
                        user.id,
                        origin,
                        details={
                            "failed_sign_ins": failed.failed_sign_ins,
                            "locked_until": None if failed.locked_until is None else failed.locked_until.isoformat(),
                        },
                    )
                )
            await record_many(transaction, events)
        if failed.locked_now:
            return SignIn(None, "locked", failed.locked_until)
        return SignIn(None, "invalid")

    async def _record(self, action: str, user: DashboardUser, origin: Origin, details: dict[str, object]) -> None:
        event = _user_event(action, actor_of(user), user.id, origin, "failure", details)
        async with self._db.transaction() as transaction:
            await record(transaction, event)

    async def _record_unknown(self, email: str, origin: Origin) -> None:
        """What was typed is not kept (it may be a password typed into the wrong field): a digest
        lets repeated attempts on one name be told apart."""
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]
        event = AuditEvent(
            actor=Actor(user="dashboard:unknown"),
            action=AuditAction.DASHBOARD_USER_SIGN_IN_FAILED,
            resource=Resource(type="dashboard_user", id="unknown"),
            outcome="failure",
            origin=origin,
            details={"reason": "unknown_user", "email_sha256": digest},
        )
        async with self._db.transaction() as transaction:
            await record(transaction, event)

    async def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(self._hasher.hash, new_password())
        return self._dummy_hash
