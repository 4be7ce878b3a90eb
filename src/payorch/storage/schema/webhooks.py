"""Webhook endpoints and deliveries, and inbound gateway notifications (migration 0004)."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from payorch.storage.schema.base import (
    BY_MERCHANT,
    TIMESTAMPTZ,
    ZERO,
    merchant_key,
    metadata,
    stamped,
    timestamp,
)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("url", Text, nullable=False),
    Column("enabled_events", ARRAY(Text), nullable=False),
    Column("description", Text),
    Column("secret_ciphertext", LargeBinary, nullable=False),
    # After a rotation, deliveries are signed with this secret too until it expires.
    Column("previous_secret_ciphertext", LargeBinary),
    timestamp("previous_secret_expires_at"),
    stamped("created_at"),
    timestamp("deleted_at"),
    merchant_key(),
    CheckConstraint("id ~ '^whe_[0-9a-z]{26}$'", name="id"),
    CheckConstraint("length(url) BETWEEN 1 AND 2048", name="url"),
    CheckConstraint("cardinality(enabled_events) >= 1", name="enabled_events"),
    Index("webhook_endpoints_active_idx", "merchant_id", "livemode", postgresql_where=text("deleted_at IS NULL")),
)

# The delivery outbox, hash-partitioned on merchant_id.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("endpoint_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=ZERO),
    timestamp("next_attempt_at"),
    Column("give_up_after", TIMESTAMPTZ, nullable=False),
    Column("last_status_code", SmallInteger),
    Column("last_error", Text),
    timestamp("delivered_at"),
    stamped("created_at"),
    stamped("updated_at"),
    merchant_key(),
    UniqueConstraint("merchant_id", "endpoint_id", "event_id"),
    CheckConstraint("id ~ '^whd_[0-9a-z]{26}$'", name="id"),
    CheckConstraint("status IN ('pending', 'succeeded', 'failed', 'canceled')", name="status"),
    CheckConstraint("attempts >= 0", name="attempts"),
    # The dispatcher's queue: deliveries still to be tried.
    Index("webhook_deliveries_due_idx", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    # The operators' CLI finds a delivery by its id alone, in whichever partition.
    Index("webhook_deliveries_id_idx", "id"),
    postgresql_partition_by=BY_MERCHANT,
)
Index(
    "webhook_deliveries_endpoint_idx",
    webhook_deliveries.c.merchant_id,
    webhook_deliveries.c.endpoint_id,
    webhook_deliveries.c.id.desc(),
)
# One merchant's dead letters, newest first (the dashboard's Webhooks page; migration 0010).
Index(
    "webhook_deliveries_dead_idx",
    webhook_deliveries.c.merchant_id,
    webhook_deliveries.c.id.desc(),
    postgresql_where=text("status = 'failed'"),
)

# Inbound notifications already applied, so a gateway's retry is a no-op.
gateway_notifications = Table(
    "gateway_notifications",
    metadata,
    Column("gateway", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("attempt_id", Text),
    Column("reference", Text),
    Column("outcome", Text, nullable=False),
    stamped("received_at"),
    PrimaryKeyConstraint("gateway", "event_id"),
    CheckConstraint("length(event_id) BETWEEN 1 AND 255", name="event_id"),
)
