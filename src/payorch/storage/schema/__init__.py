"""Every table payorch's migrations create, in one ``MetaData``: Alembic's ``target_metadata``.

``alembic check`` compares this with a migrated database (tests/integration/test_schema.py), so a
table definition here is what exists. What a ``Table`` cannot express (hash partitions, triggers,
SQL functions) stays in the migrations.
"""

from __future__ import annotations

from payorch.storage.schema.accounts import gateway_accounts, routing_configs
from payorch.storage.schema.audit import audit_chain, audit_outbox, audit_sink_cursors, audit_verifications
from payorch.storage.schema.bank_links import bank_link_states, bank_links
from payorch.storage.schema.base import metadata
from payorch.storage.schema.charges import charge_attempts, charges
from payorch.storage.schema.dashboard import dashboard_users
from payorch.storage.schema.events import events
from payorch.storage.schema.idempotency import idempotency_keys
from payorch.storage.schema.merchants import api_keys, merchants
from payorch.storage.schema.payment_methods import payment_methods
from payorch.storage.schema.refunds import refunds
from payorch.storage.schema.sandbox import sandbox_operations, sandbox_payments
from payorch.storage.schema.webhooks import gateway_notifications, webhook_deliveries, webhook_endpoints

__all__ = [
    "api_keys",
    "audit_chain",
    "audit_outbox",
    "audit_sink_cursors",
    "audit_verifications",
    "bank_link_states",
    "bank_links",
    "charge_attempts",
    "charges",
    "dashboard_users",
    "events",
    "gateway_accounts",
    "gateway_notifications",
    "idempotency_keys",
    "merchants",
    "metadata",
    "payment_methods",
    "refunds",
    "routing_configs",
    "sandbox_operations",
    "sandbox_payments",
    "webhook_deliveries",
    "webhook_endpoints",
]
