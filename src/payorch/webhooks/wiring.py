"""Builds the webhook pieces once, for the Runtime."""

from __future__ import annotations

from dataclasses import dataclass

from payorch.gateways.registry import GatewayRegistry
from payorch.orchestration.reconcile import Reconciler
from payorch.settings import Settings
from payorch.storage.database import Database
from payorch.storage.engine import SessionFactory
from payorch.webhooks.dispatcher import Dispatcher, OutcomeHook
from payorch.webhooks.inbound import InboundService
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
    db: Database,
    registry: GatewayRegistry,
    reconciler: Reconciler,
    *,
    sessions: SessionFactory,
    on_outcome: OutcomeHook | None = None,
) -> Webhooks:
    """``sessions``: transitional, for the inbound notifications' charge-settling part only."""
    config = settings.webhooks
    configured_key = config.secret_key.get_secret_value() if config.secret_key is not None else None
    box = SecretBox.from_setting(configured_key, settings.data_dir / KEY_FILE)
    return Webhooks(
        endpoints=WebhookService(db, config, box),
        dispatcher=Dispatcher(db, config, box, on_outcome=on_outcome),
        inbound=InboundService(db, sessions, registry, reconciler),
    )
