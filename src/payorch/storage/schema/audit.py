"""The audit trail: transactional outbox, hash chain and per-sink cursors (migration 0002).

Not partitioned: the chain is one global order. A trigger in the migration keeps ``audit_chain``
append-only.
"""

from __future__ import annotations

from sqlalchemy import CHAR, BigInteger, CheckConstraint, Column, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import TIMESTAMPTZ, ZERO, metadata, stamped

SHA256_HEX = "'^[0-9a-f]{64}$'"

audit_outbox = Table(
    "audit_outbox",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),  # BIGSERIAL
    Column("event_id", Text, nullable=False, unique=True),
    Column("occurred_at", TIMESTAMPTZ, nullable=False),
    Column("merchant_id", Text),
    Column("payload", JSONB, nullable=False),
    stamped("created_at"),
)

audit_chain = Table(
    "audit_chain",
    metadata,
    # The shipper numbers the chain (tip + 1): no sequence behind it.
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("event_id", Text, nullable=False, unique=True),
    Column("outbox_seq", BigInteger, nullable=False),
    Column("occurred_at", TIMESTAMPTZ, nullable=False),
    Column("recorded_at", TIMESTAMPTZ, nullable=False),
    Column("prev_hash", CHAR(64), nullable=False),
    Column("hash", CHAR(64), nullable=False, unique=True),
    Column("canonical", Text, nullable=False),
    stamped("chained_at"),
    CheckConstraint("seq > 0", name="seq"),
    CheckConstraint(f"prev_hash ~ {SHA256_HEX}", name="prev_hash"),
    CheckConstraint(f"hash ~ {SHA256_HEX}", name="hash"),
)

audit_sink_cursors = Table(
    "audit_sink_cursors",
    metadata,
    Column("sink", Text, primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default=ZERO),
    stamped("updated_at"),
    CheckConstraint("last_seq >= 0", name="last_seq"),
)
