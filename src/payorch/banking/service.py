"""Bank linking rules (DESIGN.md section 10): create a link, complete it from the browser callback,
read it, and turn its stored refresh token into an access token.

The end user is whoever the link record names (``user_reference``, set by the merchant with its API
key); ``state`` only finds the link, once, before it expires. Database writes are short transactions
around the token endpoint and the secrets store, and each step writes its audit event in the same
transaction as the change it records. No token ever reaches a log line, an audit event, an error,
a response or the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from payorch.audit.events import Actor, AuditEvent, Origin, Outcome, Resource, record
from payorch.banking import oauth
from payorch.banking.config import BankingConfig, OAuthProviderConfig
from payorch.banking.secrets import SecretsStore, SecretsStoreError, build_secrets_store, secret_name
from payorch.errors import ApiError, CardDataNotAllowed, InvalidRequest, NotFound
from payorch.ids import new_id
from payorch.security.api_keys import Caller
from payorch.security.pan import contains_pan
from payorch.storage import bank_links as repo
from payorch.storage.bank_links import BankLink
from payorch.storage.database import Database
from payorch.storage.sql import Connection

log = logging.getLogger(__name__)

CREATED = "bank_link.created"
COMPLETED = "bank_link.completed"
FAILED = "bank_link.failed"
REFRESHED = "bank_link.refreshed"
CALLBACK_REFUSED = "bank_link.callback_refused"

# Version ids of a link's secret are derived from (link id, generation): a retried write of one
# generation is the same Secrets Manager request, so it can never add a second version.
_REQUEST_TOKEN_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-4c4f-9a57-2b1f0c6d8e31")

_TOKEN_FAILURE_CODES = {
    "rejected": "token_exchange_rejected",
    "unavailable": "token_endpoint_unavailable",
    "invalid_response": "token_endpoint_invalid_response",
    "no_refresh_token": "no_refresh_token",
}


class BankLinkingNotConfigured(ApiError):
    status = 503
    type = "api_error"
    code = "bank_linking_not_configured"


class BankLinkNotFound(NotFound):
    pass


class CallbackRefused(InvalidRequest):
    """A callback that cannot be tied to a pending link (missing, unknown or used ``state``)."""


class BankLinkNotActive(InvalidRequest):
    code = "bank_link_not_active"


class RefreshInProgress(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "refresh_in_progress"


class RefreshFailed(ApiError):
    status = 502
    type = "api_error"
    code = "refresh_failed"


@dataclass(frozen=True, slots=True)
class CreatedLink:
    link: BankLink
    authorize_url: str


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    link_id: str
    completed: bool
    failure_code: str | None = None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """What a refresh yields to the code that calls the bank's API. Never rendered or logged."""

    link: BankLink
    access_token: SecretStr
    expires_in: int | None
    rotated: bool


def request_token(link_id: str, generation: int) -> str:
    return str(uuid.uuid5(_REQUEST_TOKEN_NAMESPACE, f"{link_id}/{generation}"))


def end_user_actor(link: BankLink) -> Actor:
    return Actor(merchant_id=link.merchant_id, user=f"end_user:{link.user_reference}")


class BankLinkService:
    def __init__(
        self,
        db: Database,
        config: BankingConfig,
        provider: OAuthProviderConfig,
        client: oauth.OAuthClient,
        store: SecretsStore,
    ) -> None:
        self._db = db
        self._config = config
        self._provider = provider
        self._oauth = client
        self._store = store

    @classmethod
    def build(cls, db: Database, config: BankingConfig, data_dir: Path) -> BankLinkService | None:
        """The service for the configured provider, or None when no provider is configured."""
        if config.provider is None:
            return None
        client = oauth.OAuthClient(config.provider, oauth.OAuthClient.build_http(config.provider))
        return cls(db, config, config.provider, client, build_secrets_store(config.secrets, data_dir))

    async def aclose(self) -> None:
        await self._oauth.aclose()

    @property
    def provider(self) -> OAuthProviderConfig:
        return self._provider

    # -- create and read ------------------------------------------------------------------------

    async def create(self, caller: Caller, user_reference: str) -> CreatedLink:
        """A pending link with a fresh single-use state and PKCE pair; returns the authorize URL."""
        if contains_pan(user_reference):
            raise CardDataNotAllowed("user_reference must not hold a card number.", param="user_reference")
        state = oauth.new_state()
        pkce = oauth.new_pkce(state)
        async with self._db.transaction() as transaction:
            link = await repo.insert_link(
                transaction,
                link_id=new_id("bl"),
                merchant_id=caller.merchant_id,
                livemode=caller.livemode,
                user_reference=user_reference,
                scopes=self._provider.scopes,
                api_key_id=caller.key_id,
                state_hash=oauth.state_digest(state),
                verifier_sealed=pkce.sealed,
                ttl=dt.timedelta(minutes=self._provider.state_ttl_minutes),
            )
            await self._audit(
                transaction,
                CREATED,
                link,
                actor=caller.actor(),
                origin=caller.origin(),
                details={"user_reference": user_reference, "expires_at": link.expires_at.isoformat()},
            )
        log.info("bank link %s created for merchant %s", link.id, link.merchant_id)
        return CreatedLink(link, oauth.authorize_url(self._provider, state=state, challenge=pkce.challenge))

    async def get(self, caller: Caller, link_id: str) -> BankLink:
        async with self._db.connection() as connection:
            link = await repo.get_link(connection, caller.merchant_id, link_id)
        if link is None or link.livemode != caller.livemode:
            raise BankLinkNotFound(f"No such bank link: '{link_id}'.", param="id")
        return link

    # -- the browser callback -------------------------------------------------------------------

    async def complete(
        self, *, state: str | None, code: str | None, error: str | None, error_description: str | None, origin: Origin
    ) -> CallbackOutcome:
        """Finish the flow the provider redirected back from.

        Raises ``CallbackRefused`` when no pending link can be found from ``state`` (missing, unknown,
        already used): there is nothing to mark. Otherwise the state is consumed whatever happens
        next, and the outcome says whether the link is now active or failed (and why).
        """
        if not state:
            await self._refused(origin, "state_missing", link=None)
            raise CallbackRefused("The callback carries no state parameter.", param="state", code="state_missing")
        digest = oauth.state_digest(state)
        async with self._db.transaction() as transaction:
            consumed = await repo.consume_state(transaction, digest)
            used = None if consumed is not None else await repo.used_state(transaction, digest)
            link = None
            if consumed is not None:
                link = await repo.get_link(transaction, consumed.merchant_id, consumed.link_id)
            refusal = _early_refusal(consumed, link, code=code, error=error, error_description=error_description)
            if consumed is not None and link is not None and refusal is not None:
                return await self._fail(transaction, link, *refusal, origin=origin)
        if consumed is None or link is None:
            reason = "state_used" if used else "state_unknown"
            await self._refused(origin, reason, link=used)
            message = "This authorization was already used." if used else "Unknown or invalid state."
            raise CallbackRefused(message, param="state", code=reason)
        if code is None or consumed.verifier_sealed is None:  # ruled out by _early_refusal
            raise CallbackRefused("Incomplete callback.", param="code", code="code_missing")
        verifier = oauth.unseal_verifier(state, consumed.verifier_sealed)
        return await self._exchange(link, code, verifier, origin)

    async def _exchange(self, link: BankLink, code: str, verifier: str, origin: Origin) -> CallbackOutcome:
        try:
            tokens = await self._oauth.exchange_code(code, verifier)
        except oauth.TokenEndpointError as exc:
            return await self._fail_in_transaction(link, _TOKEN_FAILURE_CODES[exc.kind], exc.message, origin)
        assert tokens.refresh_token is not None  # exchange_code guarantees it  # noqa: S101
        name = secret_name(self._config.secrets.name_prefix, link.merchant_id, link.id)
        try:
            version = await self._store.put(name, tokens.refresh_token, request_token=request_token(link.id, 1))
        except SecretsStoreError as exc:
            log.warning("bank link %s: refresh token not stored: %s", link.id, exc)
            message = "The refresh token could not be stored; the link must be started again."
            return await self._fail_in_transaction(link, "secrets_store_unavailable", message, origin)
        async with self._db.transaction() as transaction:
            active = await repo.mark_active(
                transaction, link.merchant_id, link.id, secret_name=name, secret_version=version
            )
            if active is None:
                raise CallbackRefused("This bank link is no longer pending.", code="bank_link_not_pending")
            await self._audit(
                transaction,
                COMPLETED,
                active,
                actor=end_user_actor(active),
                origin=origin,
                details={"secret_version": version, "scope": tokens.scope, "expires_in": tokens.expires_in},
            )
        log.info("bank link %s completed", link.id)
        return CallbackOutcome(link.id, completed=True)

    async def _fail_in_transaction(self, link: BankLink, code: str, message: str, origin: Origin) -> CallbackOutcome:
        async with self._db.transaction() as transaction:
            return await self._fail(transaction, link, code, message, origin=origin)

    async def _fail(
        self, transaction: Connection, link: BankLink, code: str, message: str, *, origin: Origin
    ) -> CallbackOutcome:
        failed = await repo.mark_failed(transaction, link.merchant_id, link.id, code=code, message=message)
        await self._audit(
            transaction,
            FAILED,
            failed or link,
            actor=end_user_actor(link),
            origin=origin,
            outcome="failure",
            details={"reason": code, "message": message, "status_before": link.status},
        )
        log.warning("bank link %s failed: %s (%s)", link.id, code, message)
        return CallbackOutcome(link.id, completed=False, failure_code=code)

    async def _refused(self, origin: Origin, reason: str, *, link: tuple[str, str] | None) -> None:
        """Audit a callback refused before any link could be touched (``link``: the (merchant, link)
        a reused state belonged to). The link itself is left as it is: a replayed callback URL must
        not be able to fail a link someone else completed."""
        async with self._db.transaction() as transaction:
            await record(
                transaction,
                AuditEvent(
                    actor=Actor(merchant_id=link[0], user="anonymous:browser")
                    if link
                    else Actor(user="anonymous:browser"),
                    action=CALLBACK_REFUSED,
                    resource=Resource(type="bank_link", id=link[1] if link else "unknown"),
                    outcome="failure",
                    origin=origin,
                    details={"reason": reason},
                ),
            )
        log.warning("bank link callback refused: %s (request %s)", reason, origin.request_id)

    # -- refresh --------------------------------------------------------------------------------

    async def refresh(
        self, merchant_id: str, link_id: str, *, actor: Actor, origin: Origin | None = None
    ) -> AccessToken:
        """Trade the link's stored refresh token for an access token. A rotated refresh token is
        stored as a new secret version before the link records it. Raises ``RefreshFailed``."""
        origin = origin or Origin()
        lease = dt.timedelta(seconds=self._config.refresh_lease_seconds)
        async with self._db.transaction() as transaction:
            link = await repo.take_refresh_lease(transaction, merchant_id, link_id, lease)
            current = link or await repo.get_link(transaction, merchant_id, link_id)
        if current is None:
            raise BankLinkNotFound(f"No such bank link: '{link_id}'.", param="id")
        if link is None:
            if current.status != "active":
                raise BankLinkNotActive(f"Bank link {link_id} is {current.status}, not active.")
            raise RefreshInProgress(f"Bank link {link_id} is being refreshed already; try again shortly.")
        assert link.secret_name is not None  # active links have one (table CHECK)  # noqa: S101
        try:
            stored = await self._store.get(link.secret_name)
            tokens = await self._oauth.refresh(stored)
        except SecretsStoreError as exc:
            await self._refresh_failed(link, "secrets_store_unavailable", str(exc), actor, origin, dead=False)
            raise RefreshFailed("The refresh token could not be read.", code="secrets_store_unavailable") from None
        except oauth.TokenEndpointError as exc:
            dead = exc.kind == "rejected"
            code = "refresh_rejected" if dead else _TOKEN_FAILURE_CODES[exc.kind]
            await self._refresh_failed(link, code, exc.message, actor, origin, dead=dead)
            raise RefreshFailed(exc.message, code=code) from None
        rotated = tokens.refresh_token is not None and (
            tokens.refresh_token.get_secret_value() != stored.get_secret_value()
        )
        version, generation = None, None
        if rotated and tokens.refresh_token is not None:
            generation = link.secret_generation + 1
            try:
                version = await self._store.put(
                    link.secret_name, tokens.refresh_token, request_token=request_token(link.id, generation)
                )
            except SecretsStoreError as exc:
                # The provider has already retired the old refresh token: without the new one the link is dead.
                await self._refresh_failed(link, "rotated_token_not_stored", str(exc), actor, origin, dead=True)
                raise RefreshFailed(
                    "The rotated refresh token could not be stored.", code="rotated_token_not_stored"
                ) from None
        async with self._db.transaction() as transaction:
            updated = await repo.finish_refresh(
                transaction, merchant_id, link_id, secret_version=version, secret_generation=generation
            )
            await self._audit(
                transaction,
                REFRESHED,
                updated or link,
                actor=actor,
                origin=origin,
                details={"rotated": rotated, "secret_version": version, "expires_in": tokens.expires_in},
            )
        log.info("bank link %s refreshed (rotated: %s)", link.id, rotated)
        return AccessToken(updated or link, tokens.access_token, tokens.expires_in, rotated)

    async def _refresh_failed(
        self, link: BankLink, code: str, message: str, actor: Actor, origin: Origin, *, dead: bool
    ) -> None:
        async with self._db.transaction() as transaction:
            if dead:
                failed = await repo.mark_failed(
                    transaction, link.merchant_id, link.id, code=code, message=message, from_statuses=("active",)
                )
                await self._audit(
                    transaction, FAILED, failed or link, actor=actor, origin=origin, outcome="failure",
                    details={"reason": code, "message": message, "status_before": link.status},
                )  # fmt: skip
            else:
                await repo.release_refresh_lease(transaction, link.merchant_id, link.id)
            await self._audit(
                transaction, REFRESHED, link, actor=actor, origin=origin, outcome="failure",
                details={"reason": code, "message": message},
            )  # fmt: skip
        log.warning("bank link %s refresh failed: %s (%s)", link.id, code, message)

    async def _audit(
        self,
        transaction: Connection,
        action: str,
        link: BankLink,
        *,
        actor: Actor,
        origin: Origin,
        outcome: Outcome = "success",
        details: dict[str, object] | None = None,
    ) -> None:
        await record(
            transaction,
            AuditEvent(
                actor=actor,
                action=action,
                resource=Resource(type="bank_link", id=link.id),
                outcome=outcome,
                origin=origin,
                details={"status": link.status, "livemode": link.livemode, **(details or {})},
            ),
        )


def _early_refusal(
    consumed: repo.ConsumedState | None,
    link: BankLink | None,
    *,
    code: str | None,
    error: str | None,
    error_description: str | None,
) -> tuple[str, str] | None:
    """(failure code, message) when a found link must fail before any token request."""
    if consumed is None or link is None:
        return None
    if link.status != "pending":
        return "bank_link_not_pending", f"The link was already {link.status}."
    if consumed.expired:
        return "state_expired", "The authorization took longer than the link allows; start a new link."
    if error is not None:
        described = oauth.provider_text(error_description)
        message = f"The provider answered {oauth.provider_text(error)}" + (f": {described}" if described else "")
        return "provider_error", message + "."
    if not code:
        return "code_missing", "The provider redirected back without an authorization code."
    if consumed.verifier_sealed is None:
        return "verifier_missing", "The link's PKCE verifier is gone."
    return None
