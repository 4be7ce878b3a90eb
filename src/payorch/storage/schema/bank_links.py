"""Bank links and their single-use OAuth states (migration 0005).

``bank_links`` is hash-partitioned on merchant_id. ``bank_link_states`` is a small unpartitioned
lookup keyed by the SHA-256 of ``state``: the browser callback carries no API key.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from payorch.storage.schema.base import (
    BY_MERCHANT,
    EMPTY_TEXT_ARRAY,
    TIMESTAMPTZ,
    ZERO,
    merchant_key,
    metadata,
    stamped,
    table_check,
    timestamp,
)

bank_links = Table(
    "bank_links",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("user_reference", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False, server_default=EMPTY_TEXT_ARRAY),
    Column("api_key_id", Text),
    Column("expires_at", TIMESTAMPTZ, nullable=False),
    Column("failure_code", Text),
    Column("failure_message", Text),
    # Where the refresh token lives in the secrets store; the token itself is never here.
    Column("secret_name", Text),
    Column("secret_version", Text),
    Column("secret_generation", Integer, nullable=False, server_default=ZERO),
    timestamp("refresh_lease_until"),
    stamped("created_at"),
    stamped("updated_at"),
    timestamp("linked_at"),
    timestamp("refreshed_at"),
    merchant_key(),
    CheckConstraint("length(user_reference) BETWEEN 1 AND 255", name="user_reference"),
    CheckConstraint("status IN ('pending', 'active', 'failed')", name="status"),
    CheckConstraint("secret_generation >= 0", name="secret_generation"),
    table_check("status <> 'active' OR (secret_name IS NOT NULL AND linked_at IS NOT NULL)", "bank_links_check"),
    table_check("status <> 'failed' OR failure_code IS NOT NULL", "bank_links_check1"),
    postgresql_partition_by=BY_MERCHANT,
)

bank_link_states = Table(
    "bank_link_states",
    metadata,
    Column("state_hash", LargeBinary, primary_key=True),
    Column("merchant_id", Text, nullable=False),
    Column("link_id", Text, nullable=False),
    Column("verifier_sealed", LargeBinary),
    Column("expires_at", TIMESTAMPTZ, nullable=False),
    timestamp("consumed_at"),
    stamped("created_at"),
    ForeignKeyConstraint(["merchant_id", "link_id"], ["bank_links.merchant_id", "bank_links.id"], ondelete="CASCADE"),
    CheckConstraint("length(state_hash) = 32", name="state_hash"),
    CheckConstraint("verifier_sealed IS NULL OR length(verifier_sealed) = 32", name="verifier_sealed"),
    Index("bank_link_states_link_idx", "merchant_id", "link_id"),
)
