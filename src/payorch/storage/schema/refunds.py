"""Refunds (migrations 0003, 0004), hash-partitioned on merchant_id like their charges."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, Index, Table, Text, text
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import BY_MERCHANT, EMPTY_JSONB, merchant_key, metadata, stamped

refunds = Table(
    "refunds",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("gateway", Text, nullable=False),
    Column("gateway_reference", Text),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("metadata", JSONB, nullable=False, server_default=EMPTY_JSONB),
    stamped("created_at"),
    stamped("updated_at"),
    merchant_key(),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency"),
    CheckConstraint("status IN ('pending', 'processing', 'succeeded', 'failed')", name="status"),
    Index("refunds_charge_idx", "merchant_id", "charge_id"),
    # Inbound notifications carry the gateway's reference, not the merchant.
    Index("refunds_reference_idx", "gateway", "gateway_reference"),
    # The reconciler claims refunds left open by updated_at, across every merchant (migration 0007).
    Index("refunds_unresolved_idx", "updated_at", postgresql_where=text("status IN ('pending', 'processing')")),
    postgresql_partition_by=BY_MERCHANT,
)
