"""Charges and their gateway attempts (migrations 0001, 0004, 0006, 0011), hash-partitioned on merchant_id."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Index,
    Integer,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from payorch.storage.schema.base import (
    BY_MERCHANT,
    EMPTY_JSONB,
    ZERO,
    card_summary_checks,
    merchant_key,
    metadata,
    stamped,
    table_check,
    timestamp,
)

CHARGE_STATUSES = "'pending', 'processing', 'requires_action', 'authorized', 'succeeded', 'failed', 'canceled'"
ATTEMPT_STATUSES = "'pending', 'approved', 'declined', 'not_sent', 'unknown', 'requires_action', 'reversed', 'review'"

charges = Table(
    "charges",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("capture", Boolean, nullable=False),
    Column("amount_captured", BigInteger, nullable=False, server_default=ZERO),
    Column("amount_refunded", BigInteger, nullable=False, server_default=ZERO),
    Column("payment_method", Text),
    Column("card_brand", Text),
    Column("card_last4", Text),
    Column("card_exp_month", SmallInteger),
    Column("card_exp_year", SmallInteger),
    Column("gateway", Text),
    Column("gateway_reference", Text),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("decline_code", Text),
    Column("description", Text),
    Column("metadata", JSONB, nullable=False, server_default=EMPTY_JSONB),
    Column("idempotency_key", Text),
    Column("api_key_id", Text),
    stamped("created_at"),
    stamped("updated_at"),
    # Added by 0006, so it is the last column of the table as it exists.
    Column("capture_requested_amount", BigInteger),
    # Added by 0009: how the charge was routed (orchestration/routing.py Decision), written with it.
    Column("routing", JSONB),
    # Customer authentication and stored credentials (0011).
    Column("return_url", Text),
    Column("setup_future_usage", Text),
    Column("off_session", Boolean, nullable=False, server_default=text("false")),
    Column("customer_presence", JSONB),
    Column("next_action", JSONB),
    Column("authentication", JSONB),
    merchant_key(),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint("currency ~ '^[a-z]{3}$'", name="currency"),
    CheckConstraint(f"status IN ({CHARGE_STATUSES})", name="status"),
    table_check("amount_captured BETWEEN 0 AND amount", "charges_check"),
    table_check("amount_refunded BETWEEN 0 AND amount_captured", "charges_check1"),
    *card_summary_checks(),
    CheckConstraint(
        "capture_requested_amount IS NULL OR capture_requested_amount > 0", name="capture_requested_amount"
    ),
    CheckConstraint("setup_future_usage IN ('off_session')", name="setup_future_usage"),
    postgresql_partition_by=BY_MERCHANT,
)
# The list endpoint: newest first within one merchant and mode.
Index("charges_list_idx", charges.c.merchant_id, charges.c.livemode, charges.c.id.desc())
# The dashboard finds a charge by its card's last four digits (migration 0010); a charge has no card
# summary until a gateway answered.
Index(
    "charges_card_last4_idx",
    charges.c.merchant_id,
    charges.c.card_last4,
    charges.c.id,
    postgresql_where=text("card_last4 IS NOT NULL"),
)

charge_attempts = Table(
    "charge_attempts",
    metadata,
    Column("id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("seq", SmallInteger, nullable=False),
    Column("gateway", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("gateway_reference", Text),
    Column("raw_code", Text),
    Column("decline_code", Text),
    Column("message", Text),
    Column("latency_ms", Integer),
    Column("check_count", Integer, nullable=False, server_default=ZERO),
    timestamp("next_check_at"),
    stamped("created_at"),
    stamped("updated_at"),
    Column("authentication_requested", Boolean, nullable=False, server_default=text("false")),
    merchant_key(),
    UniqueConstraint("merchant_id", "charge_id", "seq"),
    CheckConstraint("seq >= 1", name="seq"),
    CheckConstraint(f"status IN ({ATTEMPT_STATUSES})", name="status"),
    # The reconciler's queue: only attempts whose outcome is still open.
    Index(
        "charge_attempts_unresolved_idx",
        "next_check_at",
        postgresql_where=text("status IN ('pending', 'unknown')"),
    ),
    # Authentications the customer has not finished, by their expiry (the reconciler's other queue).
    Index(
        "charge_attempts_authentication_idx",
        "next_check_at",
        postgresql_where=text("status = 'requires_action'"),
    ),
    # Inbound notifications name our attempt id or the gateway's reference, never the merchant: these
    # find the row without knowing the partition.
    Index("charge_attempts_id_idx", "id"),
    Index("charge_attempts_reference_idx", "gateway", "gateway_reference"),
    postgresql_partition_by=BY_MERCHANT,
)
