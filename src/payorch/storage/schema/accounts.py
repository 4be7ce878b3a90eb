"""Per-merchant gateway accounts and versioned routing configurations (migration 0009).

Neither is a money table: a merchant has a handful of each, so they are not partitioned. Every key
holds ``merchant_id`` all the same, so a Citus distribution on it needs no schema change.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import EMPTY_JSONB, merchant_key, metadata, stamped

gateway_accounts = Table(
    "gateway_accounts",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("timeout_ms", Integer),
    # Currency -> {"percent_bps", "fixed"}: integer basis points and minor units.
    Column("fees", JSONB, nullable=False, server_default=EMPTY_JSONB),
    # The credentials, sealed: AES-256-GCM under a data key of this account's own, which is kept
    # only wrapped by the master key named in wrap_key_id (KMS or the local key file).
    Column("sealed_credentials", LargeBinary, nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("wrap_key_id", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("secret_last4", Text, nullable=False),
    # Bumped by every change: what a process's cached adapter is checked against.
    Column("revision", Integer, nullable=False, server_default="1"),
    stamped("created_at"),
    stamped("updated_at"),
    merchant_key(),
    UniqueConstraint("merchant_id", "name"),
    CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,31}$'", name="name"),
    CheckConstraint("revision >= 1", name="revision"),
    # The per-account notification path names the account only.
    Index("gateway_accounts_id_idx", "id", unique=True),
    # Key rotation walks the accounts still wrapped by an old key.
    Index("gateway_accounts_wrap_key_idx", "wrap_key_id"),
)

routing_configs = Table(
    "routing_configs",
    metadata,
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("config", JSONB, nullable=False),
    Column("api_key_id", Text),
    stamped("created_at"),
    PrimaryKeyConstraint("merchant_id", "livemode", "version"),
    CheckConstraint("version >= 1", name="version"),
)
