"""Idempotency keys (migration 0001), hash-partitioned on merchant_id."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, Index, LargeBinary, PrimaryKeyConstraint, SmallInteger, Table, Text

from payorch.storage.schema.base import BY_MERCHANT, metadata, stamped, timestamp

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("merchant_id", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("request_method", Text, nullable=False),
    Column("request_path", Text, nullable=False),
    Column("status", Text, nullable=False),
    # The object the key's request created: a charge, a refund or a payment method
    # (``IdempotencyRecord.object_id``). Not renamed: replicas still running during an upgrade read it.
    Column("charge_id", Text),
    Column("response_status", SmallInteger),
    Column("response_body", LargeBinary),
    stamped("created_at"),
    stamped("locked_at"),
    timestamp("completed_at"),
    PrimaryKeyConstraint("merchant_id", "key"),
    CheckConstraint("length(key) BETWEEN 1 AND 255", name="key"),
    CheckConstraint("status IN ('in_progress', 'completed')", name="status"),
    # Expiry sweeps keys by age across every merchant.
    Index("idempotency_keys_created_idx", "created_at"),
    postgresql_partition_by=BY_MERCHANT,
)
