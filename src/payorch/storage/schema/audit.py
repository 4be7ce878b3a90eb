"""The audit trail: transactional outbox, hash chain and per-sink cursors (migration 0002).

Not partitioned: the chain is one global order. A trigger in the migration keeps ``audit_chain``
append-only.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ColumnElement,
    Index,
    Integer,
    Table,
    Text,
    cast,
    func,
    literal,
)
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

# Each sink's verification runs (migration 0010): the dashboard's Audit page shows the last.
audit_verifications = Table(
    "audit_verifications",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),  # BIGSERIAL
    Column("sink", Text, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("checked", Integer, nullable=False),
    Column("last_seq", BigInteger, nullable=False),
    Column("summary", Text, nullable=False),
    Column("verified_by", Text, nullable=False),
    stamped("verified_at"),
    CheckConstraint("checked >= 0", name="checked"),
    CheckConstraint("last_seq >= 0", name="last_seq"),
)
Index("audit_verifications_sink_idx", audit_verifications.c.sink, audit_verifications.c.id.desc())


def _in_event(*path: str) -> ColumnElement[str]:
    """``canonical::jsonb #>> '{event,...}'``: a field of the chained event, as text."""
    return cast(audit_chain.c.canonical, JSONB).op("#>>", return_type=Text)(literal("{event," + ",".join(path) + "}"))


AUDIT_SUBJECT = func.coalesce(_in_event("details", "charge"), _in_event("resource", "id"))
"""What an event of the chain is about: the charge its details name (an attempt, a refund), else its
resource. The dashboard finds a charge's own audit events by it (migration 0010)."""
Index("audit_chain_subject_idx", AUDIT_SUBJECT)
