"""Dashboard users: merchants' users and operators (migration 0010).

Not partitioned: sign-in finds a user by email alone, so the email is unique across merchants. Under
Citus this is a reference table, like ``merchants`` (a unique key without ``merchant_id`` cannot be
distributed); an operator has no merchant.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Integer, Table, Text

from payorch.storage.schema.base import ZERO, metadata, stamped, table_check, timestamp

dashboard_users = Table(
    "dashboard_users",
    metadata,
    Column("id", Text, primary_key=True),
    Column("merchant_id", Text, ForeignKey("merchants.id")),
    Column("role", Text, nullable=False),
    Column("email", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("failed_sign_ins", Integer, nullable=False, server_default=ZERO),
    timestamp("locked_until"),
    # Bumped by signing out: every session cookie issued before it stops working.
    Column("session_generation", Integer, nullable=False, server_default=ZERO),
    timestamp("last_sign_in_at"),
    stamped("created_at"),
    CheckConstraint("id ~ '^du_[0-9a-z]{26}$'", name="id"),
    CheckConstraint("role IN ('merchant', 'operator')", name="role"),
    CheckConstraint("email = lower(email) AND length(email) BETWEEN 3 AND 254", name="email"),
    CheckConstraint("failed_sign_ins >= 0", name="failed_sign_ins"),
    CheckConstraint("session_generation >= 0", name="session_generation"),
    table_check("(role = 'operator') = (merchant_id IS NULL)", "dashboard_users_check"),
    Index("dashboard_users_merchant_idx", "merchant_id"),
)
