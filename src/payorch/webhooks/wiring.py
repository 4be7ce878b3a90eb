"""Builds the webhook pieces once, for the Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from payorch.gateways.registry import GatewayRegistry
from payorch.storage.database import Database
from payorch.webhooks.config import WebhooksConfig
from payorch.webhooks.dispatcher import Dispatcher, OutcomeHook
from payorch.webhooks.inbound import AttemptSettler, InboundService, NotificationAccounts, RefundSettler
from payorch.webhooks.service import WebhookService
from payorch.webhooks.signing import SecretBox

KEY_FILE = "webhook-secret-key"


@dataclass(frozen=True, slots=True)
class Webhooks:
    endpoints: WebhookService
    dispatcher: Dispatcher
    inbound: InboundService


def build_webhooks(
    config: WebhooksConfig,
    db: Database,
    registry: GatewayRegistry,
    attempts: AttemptSettler,
    refunds: RefundSettler,
    *,
    data_dir: Path,
    on_outcome: OutcomeHook | None = None,
    accounts: NotificationAccounts | None = None,
) -> Webhooks:
    """``data_dir`` holds the key that seals endpoints' signing secrets when none is configured."""
    configured_key = config.secret_key.get_secret_value() if config.secret_key is not None else None
    box = SecretBox.from_setting(configured_key, data_dir / KEY_FILE)
    return Webhooks(
        endpoints=WebhookService(db, config, box),
        dispatcher=Dispatcher(db, config, box, on_outcome=on_outcome),
        inbound=InboundService(db, registry, attempts, refunds, accounts),
    )
