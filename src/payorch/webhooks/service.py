"""Webhook endpoints: create (the secret shown once), list, read, delete, rotate the secret with an
overlap, list deliveries and redeliver by hand. Every change is audited in its own transaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Resource, record
from payorch.errors import InvalidRequest, NotFound
from payorch.ids import new_id
from payorch.security.api_keys import Caller
from payorch.storage import webhooks as repo
from payorch.storage.database import Database
from payorch.storage.sql import Connection
from payorch.storage.webhooks import Delivery, Endpoint
from payorch.webhooks import urls
from payorch.webhooks.config import WebhooksConfig
from payorch.webhooks.schemas import RotateSecret, WebhookEndpointCreate
from payorch.webhooks.signing import SecretBox, new_secret

log = logging.getLogger(__name__)


class WebhookEndpointNotFound(NotFound):
    code = "resource_missing"


class WebhookService:
    def __init__(
        self, db: Database, config: WebhooksConfig, box: SecretBox, *, resolver: urls.Resolver | None = None
    ) -> None:
        self._db = db
        self._config = config
        self._box = box
        self._guard = urls.UrlGuard.for_config(config, resolver)

    @property
    def retry_window_seconds(self) -> float:
        return self._config.retry_window_hours * 3600

    async def create(self, caller: Caller, params: WebhookEndpointCreate) -> tuple[Endpoint, str]:
        """Register an endpoint; returns it with its signing secret (never shown again)."""
        try:
            await self._guard.check(params.url, livemode=caller.livemode)
        except urls.RefusedUrl as refused:
            log.info("webhook endpoint URL refused for merchant %s: %s", caller.merchant_id, refused.detail)
            raise InvalidRequest(str(refused), param="url", code="url_invalid") from refused
        events: list[str] = sorted(set(params.enabled_events))
        if "*" in events and len(events) > 1:
            raise InvalidRequest('"*" already enables every event type.', param="enabled_events")
        secret = new_secret()
        async with self._db.transaction() as transaction:
            if await repo.count_endpoints(transaction, caller.merchant_id, caller.livemode) >= (
                self._config.max_endpoints_per_mode
            ):
                raise InvalidRequest(
                    f"At most {self._config.max_endpoints_per_mode} webhook endpoints per mode.",
                    code="resource_limit_exceeded",
                )
            endpoint = await repo.insert_endpoint(
                transaction,
                endpoint_id=new_id("whe"),
                merchant_id=caller.merchant_id,
                livemode=caller.livemode,
                url=params.url,
                enabled_events=list(events),
                description=params.description,
                secret_ciphertext=self._box.seal(secret),
            )
            await self._audit(transaction, caller, AuditAction.WEBHOOK_ENDPOINT_CREATED, endpoint.id, url=endpoint.url)
        return endpoint, secret

    async def list_endpoints(self, caller: Caller) -> list[Endpoint]:
        async with self._db.connection() as connection:
            return await repo.list_endpoints(connection, caller.merchant_id, caller.livemode)

    async def get(self, caller: Caller, endpoint_id: str) -> Endpoint:
        async with self._db.connection() as connection:
            return await self._get(connection, caller, endpoint_id)

    async def delete(self, caller: Caller, endpoint_id: str) -> Endpoint:
        """Stop sending to it; deliveries still queued for it are canceled."""
        async with self._db.transaction() as transaction:
            endpoint = await self._get(transaction, caller, endpoint_id, for_update=True)
            canceled = await repo.delete_endpoint(transaction, caller.merchant_id, endpoint_id)
            await self._audit(
                transaction, caller, AuditAction.WEBHOOK_ENDPOINT_DELETED, endpoint_id, canceled_deliveries=canceled
            )
        return endpoint

    async def rotate_secret(self, caller: Caller, endpoint_id: str, params: RotateSecret) -> tuple[Endpoint, str]:
        """A new secret; the current one keeps signing alongside it until the overlap ends."""
        overlap = (
            params.expires_in_seconds
            if params.expires_in_seconds is not None
            else self._config.secret_overlap_hours * 3600
        )
        secret = new_secret()
        async with self._db.transaction() as transaction:
            current = await self._get(transaction, caller, endpoint_id, for_update=True)
            rotated = await repo.rotate_secret(
                transaction,
                caller.merchant_id,
                endpoint_id,
                secret_ciphertext=self._box.seal(secret),
                previous_secret_ciphertext=current.secret_ciphertext,
                previous_expires_at=datetime.now(UTC) + timedelta(seconds=overlap),
            )
            if rotated is None:
                raise WebhookEndpointNotFound(f"No such webhook endpoint: '{endpoint_id}'", param="id")
            await self._audit(
                transaction,
                caller,
                AuditAction.WEBHOOK_ENDPOINT_UPDATED,
                endpoint_id,
                change="secret_rotated",
                overlap_seconds=overlap,
            )
        return rotated, secret

    async def list_deliveries(self, caller: Caller, endpoint_id: str, *, limit: int) -> tuple[list[Delivery], bool]:
        async with self._db.connection() as connection:
            await self._get(connection, caller, endpoint_id)
            rows = await repo.list_deliveries(connection, caller.merchant_id, endpoint_id, limit=limit + 1)
        return rows[:limit], len(rows) > limit

    async def redeliver(self, caller: Caller, endpoint_id: str, delivery_id: str) -> Delivery:
        """Queue a delivery again now (a dead-lettered one, or one the merchant lost), same webhook-id."""
        async with self._db.transaction() as transaction:
            await self._get(transaction, caller, endpoint_id)
            delivery = await repo.requeue_delivery(
                transaction, caller.merchant_id, delivery_id, retry_window_seconds=self.retry_window_seconds
            )
            if delivery is None or delivery.endpoint_id != endpoint_id:
                raise NotFound(f"No such webhook delivery: '{delivery_id}'", param="delivery_id")
            await self._audit(
                transaction, caller, AuditAction.WEBHOOK_ENDPOINT_UPDATED, endpoint_id, redelivered=delivery_id
            )
        return delivery

    async def redeliver_by_id(
        self, delivery_id: str, *, operator: str, origin: Origin | None = None
    ) -> Delivery | None:
        """The operator's ``payorch webhooks redeliver``: by delivery id alone (``origin``: its host)."""
        async with self._db.transaction() as transaction:
            found = await repo.find_delivery(transaction, delivery_id)
            if found is None:
                return None
            delivery = await repo.requeue_delivery(
                transaction, found.merchant_id, delivery_id, retry_window_seconds=self.retry_window_seconds
            )
            if delivery is not None:
                await record(
                    transaction,
                    AuditEvent(
                        actor=Actor(merchant_id=found.merchant_id, user=operator),
                        action=AuditAction.WEBHOOK_ENDPOINT_UPDATED,
                        resource=Resource(type="webhook_endpoint", id=found.endpoint_id),
                        origin=origin or Origin(),
                        details={"redelivered": delivery_id},
                    ),
                )
        return delivery

    async def _get(
        self, connection: Connection, caller: Caller, endpoint_id: str, *, for_update: bool = False
    ) -> Endpoint:
        endpoint = await repo.get_endpoint(
            connection, caller.merchant_id, caller.livemode, endpoint_id, for_update=for_update
        )
        if endpoint is None:
            raise WebhookEndpointNotFound(f"No such webhook endpoint: '{endpoint_id}'", param="id")
        return endpoint

    @staticmethod
    async def _audit(
        transaction: Connection, caller: Caller, action: AuditAction, endpoint_id: str, **details: object
    ) -> None:
        await record(
            transaction,
            AuditEvent(
                actor=caller.actor(),
                action=action,
                resource=Resource(type="webhook_endpoint", id=endpoint_id),
                origin=caller.origin(),
                details=dict(details),
            ),
        )
