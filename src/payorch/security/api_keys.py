"""API keys: ``sk_test_`` / ``sk_live_`` + a 12-character lookup id + a 32-character secret.

Only the SHA-256 of the whole key is stored; the lookup id finds the row and the hash is compared in
constant time. A key is shown once, when it is created.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Final, Literal

from payorch.audit import trail
from payorch.audit.auth_failures import FailedAuthentication
from payorch.audit.events import Actor, Origin, record
from payorch.ids import new_id
from payorch.storage import merchants as repo
from payorch.storage.database import Database
from payorch.storage.sql import Connection

Mode = Literal["test", "live"]
_ALPHABET: Final = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOOKUP_LEN: Final = 12
_SECRET_LEN: Final = 32


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the authenticated merchant, key and mode, and from where (for the audit trail).
    A dashboard user acts with no key: ``key_id`` is None and ``user`` names them."""

    merchant_id: str
    key_id: str | None
    livemode: bool
    ip: str | None = None
    request_id: str | None = None
    user: str | None = None

    def actor(self) -> Actor:
        return Actor(merchant_id=self.merchant_id, api_key_id=self.key_id, user=self.user)

    def origin(self) -> Origin:
        return Origin(ip=self.ip, request_id=self.request_id)


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    merchant_id: str
    mode: Mode
    secret: str
    """The full key: shown once, never stored."""


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse(key: str) -> tuple[Mode, str] | None:
    """(mode, lookup id) of a well-formed key, else None."""
    for mode in ("test", "live"):
        prefix = f"sk_{mode}_"
        if key.startswith(prefix):
            body = key[len(prefix) :]
            if len(body) == _LOOKUP_LEN + _SECRET_LEN and all(c in _ALPHABET for c in body):
                return mode, body[:_LOOKUP_LEN]
    return None


async def create_key(connection: Connection, merchant_id: str, mode: Mode = "test") -> NewKey:
    lookup = _random(_LOOKUP_LEN)
    secret = f"sk_{mode}_{lookup}{_random(_SECRET_LEN)}"
    key_id = new_id("key")
    await repo.insert_api_key(
        connection,
        key_id=key_id,
        merchant_id=merchant_id,
        lookup=lookup,
        secret_hash=_digest(secret),
        mode=mode,
        scopes=("charges:write", "charges:read"),
    )
    return NewKey(key_id=key_id, merchant_id=merchant_id, mode=mode, secret=secret)


async def issue_key(
    connection: Connection, merchant_id: str, mode: Mode, actor: Actor, origin: Origin | None = None, **details: object
) -> NewKey:
    """Create a key and record ``api_key.created`` in the connection's transaction (the CLI, the
    dashboard). The event never holds the key."""
    key = await create_key(connection, merchant_id, mode)
    event = trail.api_key_created(
        actor, merchant_id=merchant_id, key_id=key.key_id, mode=key.mode, origin=origin, **details
    )
    await record(connection, event)
    return key


async def revoke_key(
    connection: Connection,
    key_id: str,
    actor: Actor,
    *,
    merchant_id: str | None = None,
    origin: Origin | None = None,
    **details: object,
) -> str | None:
    """Revoke a key (only ``merchant_id``'s, when given) and record ``api_key.revoked`` in the
    connection's transaction. Its merchant id, or None when there was no such active key. API
    processes stop accepting it within their key cache's TTL."""
    revoked = await repo.revoke_api_key(connection, key_id, merchant_id=merchant_id)
    if revoked is not None:
        event = trail.api_key_revoked(actor, merchant_id=revoked, key_id=key_id, origin=origin, **details)
        await record(connection, event)
    return revoked


class KeyAuthenticator:
    """Resolves a presented key to a :class:`Caller`. Rows are cached for a few seconds, so a
    revocation takes at most ``cache_seconds`` to apply on every API process."""

    def __init__(self, db: Database, *, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, repo.ApiKeyRecord | None]] = {}
        # Lookups in flight: when a key's entry expires under load, the requests that find it missing
        # share one database read instead of each making its own.
        self._inflight: dict[str, asyncio.Task[repo.ApiKeyRecord | None]] = {}

    async def authenticate(self, presented: str) -> Caller | None:
        identified = await self.identify(presented)
        return identified if isinstance(identified, Caller) else None

    async def identify(self, presented: str | None) -> Caller | FailedAuthentication:
        """The caller a key authenticates, or why it was refused, naming the key by its mode and
        lookup id (never its secret) for the audit trail."""
        if not presented:
            return FailedAuthentication("missing", "missing")
        parsed = parse(presented)
        if parsed is None:
            return FailedAuthentication("malformed", "malformed")
        mode, lookup = parsed
        prefix = f"{mode}:{lookup}"
        record = await self._record(lookup)
        if record is None:
            return FailedAuthentication("unknown_key", prefix)
        known = FailedAuthentication("invalid_secret", prefix, record.merchant_id, record.id)
        if record.mode != mode or not hmac.compare_digest(_digest(presented), record.secret_hash):
            return known
        if record.revoked_at is not None:
            return FailedAuthentication("revoked", prefix, record.merchant_id, record.id)
        return Caller(merchant_id=record.merchant_id, key_id=record.id, livemode=mode == "live")

    async def _record(self, lookup: str) -> repo.ApiKeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(lookup)
        if cached is not None and cached[0] > now:
            return cached[1]
        lookup_task = self._inflight.get(lookup)
        if lookup_task is None:
            lookup_task = asyncio.create_task(self._load(lookup), name="api-key-lookup")
            self._inflight[lookup] = lookup_task
            lookup_task.add_done_callback(self._landed)
        # Shielded: a request that goes away does not cancel the read the others are waiting for.
        return await asyncio.shield(lookup_task)

    def _landed(self, task: asyncio.Task[repo.ApiKeyRecord | None]) -> None:
        self._inflight = {k: t for k, t in self._inflight.items() if t is not task}
        if not task.cancelled():
            task.exception()  # retrieved: every request waiting on it may have gone away

    async def _load(self, lookup: str) -> repo.ApiKeyRecord | None:
        now = time.monotonic()
        async with self._db.connection() as connection:
            record = await repo.find_api_key(connection, lookup)
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[lookup] = (now + self._cache_seconds, record)
        return record
