"""Events (migrations 0004, 0008): one row per state change, written by the triggers on charges and refunds.

Hash-partitioned on merchant_id. ``created_at`` defaults to ``clock_timestamp()``, not ``now()``, so
events written by one transaction keep the order they happened in. ``sequence`` numbers one object's
events from 1 with no gaps (assigned by ``payorch_emit_event``, migration 0008).
"""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, Column, Index, Integer, Table, Text, UniqueConstraint, func, text
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import BY_MERCHANT, TIMESTAMPTZ, merchant_key, metadata, timestamp

events = Table(
    "events",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("type", Text, nullable=False),
    Column("resource_type", Text, nullable=False),
    Column("resource_id", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", TIMESTAMPTZ, nullable=False, server_default=func.clock_timestamp()),
    timestamp("fanned_out_at"),
    # Added by 0008, so it is the last column of the table as it exists.
    Column("sequence", Integer, nullable=False),
    merchant_key(),
    UniqueConstraint("merchant_id", "resource_id", "sequence"),
    CheckConstraint("sequence >= 1", name="sequence"),
    CheckConstraint("id ~ '^evt_[0-9a-z]{26}$'", name="id"),
    CheckConstraint(r"type ~ '^[a-z_]+(\.[a-z_]+)+$'", name="type"),
    # The dispatcher's queue: events not yet turned into deliveries.
    Index("events_fan_out_idx", "created_at", postgresql_where=text("fanned_out_at IS NULL")),
    Index("events_resource_idx", "merchant_id", "resource_id", "id"),
    postgresql_partition_by=BY_MERCHANT,
)
