"""Builds the webhook pieces once, for the Runtime."""

from __future__ import annotations

from dataclasses import dataclass

from payorch.gateways.registry import GatewayRegistry
from payorch.settings import Settings
from payorch.storage.database import Database
from payorch.storage.engine import SessionFactory
from payorch.webhooks.dispatcher import Dispatcher, OutcomeHook
from payorch.webhooks.inbound import AttemptSettler, InboundService, RefundSettler
from payorch.webhooks.service import WebhookService
from payorch.webhooks.signing import SecretBox

KEY_FILE = "webhook-secret-key"


@dataclass(frozen=True, slots=True)
class Webhooks:
    endpoints: WebhookService
    dispatcher: Dispatcher
    inbound: InboundService


def build_webhooks(
    settings: Settings,
    sessions: SessionFactory,
    db: Database,
    registry: GatewayRegistry,
    attempts: AttemptSettler,
    refunds: RefundSettler,
    database_url: str,
    *,
    on_outcome: OutcomeHook | None = None,
) -> Webhooks:
    config = settings.webhooks
    configured_key = config.secret_key.get_secret_value() if config.secret_key is not None else None
    box = SecretBox.from_setting(configured_key, settings.data_dir / KEY_FILE)
    return Webhooks(
        endpoints=WebhookService(sessions, config, box),
        dispatcher=Dispatcher(sessions, config, box, database_url, on_outcome=on_outcome),
        inbound=InboundService(sessions, db, registry, attempts, refunds),
    )
