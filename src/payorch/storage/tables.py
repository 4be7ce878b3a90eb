"""Table definitions for queries. The DDL itself (partitions, checks) lives in the Alembic migrations."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData()

merchants = Table(
    "merchants",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, nullable=False),
    Column("lookup", Text, nullable=False),
    Column("secret_hash", LargeBinary, nullable=False),
    Column("mode", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

charges = Table(
    "charges",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, primary_key=True),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("capture", Boolean, nullable=False),
    Column("amount_captured", BigInteger, nullable=False),
    Column("amount_refunded", BigInteger, nullable=False),
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
    Column("metadata", JSONB, nullable=False),
    Column("idempotency_key", Text),
    Column("api_key_id", Text),
    Column("capture_requested_amount", BigInteger),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

charge_attempts = Table(
    "charge_attempts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, primary_key=True),
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
    Column("check_count", Integer, nullable=False),
    Column("next_check_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("merchant_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", LargeBinary, nullable=False),
    Column("request_method", Text, nullable=False),
    Column("request_path", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("charge_id", Text),
    Column("response_status", SmallInteger),
    Column("response_body", LargeBinary),
    Column("created_at", DateTime(timezone=True)),
    Column("locked_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
)

sandbox_payments = Table(
    "sandbox_payments",
    metadata,
    Column("gateway", Text, primary_key=True),
    Column("reference", Text, primary_key=True),
    Column("payment_id", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("charge_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("amount_captured", BigInteger, nullable=False),
    Column("amount_refunded", BigInteger, nullable=False),
    Column("decline_code", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

sandbox_operations = Table(
    "sandbox_operations",
    metadata,
    Column("gateway", Text, primary_key=True),
    Column("idempotency_key", Text, primary_key=True),
    Column("payment_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("operation_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True)),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, primary_key=True),
    Column("charge_id", Text, nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text),
    Column("gateway", Text, nullable=False),
    Column("gateway_reference", Text),
    Column("failure_code", Text),
    Column("failure_message", Text),
    Column("metadata", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
)

payment_methods = Table(
    "payment_methods",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, primary_key=True),
    Column("livemode", Boolean, nullable=False),
    Column("tokens", JSONB, nullable=False),
    Column("card_brand", Text),
    Column("card_last4", Text),
    Column("card_exp_month", SmallInteger),
    Column("card_exp_year", SmallInteger),
    Column("created_at", DateTime(timezone=True)),
)
