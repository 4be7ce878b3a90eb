"""The sandbox processor's own books (migrations 0001, 0011): what a real gateway would hold on its side."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, PrimaryKeyConstraint, Table, Text, text

from payorch.storage.schema.base import ZERO, metadata, stamped

sandbox_payments = Table(
    "sandbox_payments",
    metadata,
    Column("gateway", Text, nullable=False),
    Column("reference", Text, nullable=False),
    Column("payment_id", Text, nullable=False, unique=True),
    Column("merchant_id", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_captured", BigInteger, nullable=False, server_default=ZERO),
    Column("amount_refunded", BigInteger, nullable=False, server_default=ZERO),
    Column("decline_code", Text),
    stamped("created_at"),
    stamped("updated_at"),
    Column("capture", Boolean, nullable=False, server_default=text("true")),
    Column("return_url", Text),
    PrimaryKeyConstraint("gateway", "reference"),
    CheckConstraint("amount > 0", name="amount"),
    CheckConstraint(
        "status IN ('processing', 'requires_action', 'authorized', 'captured', 'voided', 'declined')", name="status"
    ),
)

sandbox_operations = Table(
    "sandbox_operations",
    metadata,
    Column("gateway", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False),
    Column("payment_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False, server_default=ZERO),
    Column("operation_id", Text, nullable=False),
    stamped("created_at"),
    PrimaryKeyConstraint("gateway", "idempotency_key"),
    CheckConstraint("kind IN ('capture', 'void', 'refund')", name="kind"),
)
