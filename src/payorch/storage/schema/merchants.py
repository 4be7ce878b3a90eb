"""Merchants and their API keys (migration 0001)."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, LargeBinary, Table, Text
from sqlalchemy.dialects.postgresql import ARRAY

from payorch.storage.schema.base import EMPTY_TEXT_ARRAY, metadata, stamped, timestamp

merchants = Table(
    "merchants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    stamped("created_at"),
    CheckConstraint("length(name) BETWEEN 1 AND 200", name="name"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id"), nullable=False),
    # The public part of the key: how a request finds its row before the constant-time compare.
    Column("lookup", Text, nullable=False, unique=True),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("mode", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False, server_default=EMPTY_TEXT_ARRAY),
    stamped("created_at"),
    timestamp("last_used_at"),
    timestamp("revoked_at"),
    CheckConstraint("mode IN ('test', 'live')", name="mode"),
    Index("api_keys_merchant_idx", "merchant_id"),
)
