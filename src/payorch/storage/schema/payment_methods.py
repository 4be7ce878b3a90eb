"""Vaulted payment methods (migrations 0003, 0011, 0012), hash-partitioned on merchant_id."""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, Column, SmallInteger, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import BY_MERCHANT, EMPTY_JSONB, card_summary_checks, merchant_key, metadata, stamped

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    # Gateway name -> that gateway's reusable token.
    Column("tokens", JSONB, nullable=False),
    Column("card_brand", Text),
    Column("card_last4", Text),
    Column("card_exp_month", SmallInteger),
    Column("card_exp_year", SmallInteger),
    stamped("created_at"),
    # Gateway name -> the card network's transaction id of the customer-present charge that set the
    # credential up, sent on that gateway's merchant-initiated charges.
    Column("network_transaction_ids", JSONB, nullable=False, server_default=EMPTY_JSONB),
    # What the gateway told at vault time, for routing rules: never more of the number than a BIN.
    Column("card_bin", Text),
    Column("card_country", Text),
    merchant_key(),
    *card_summary_checks(),
    CheckConstraint("card_bin ~ '^[0-9]{6}([0-9]{2})?$'", name="card_bin"),
    CheckConstraint("card_country ~ '^[A-Z]{2}$'", name="card_country"),
    postgresql_partition_by=BY_MERCHANT,
)
