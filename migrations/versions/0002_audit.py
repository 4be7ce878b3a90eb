"""Audit trail: the transactional outbox, the hash chain and per-sink cursors (DESIGN.md section 8).

Not partitioned: the chain is one global order. ``audit_chain`` is append-only: a trigger refuses
UPDATE and DELETE, so even a database user that can write it cannot quietly rewrite history (the
sinks and ``payorch audit verify`` are the other half of that guarantee).

Revision ID: 0002_audit
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_audit"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

UPGRADE = (
    """
    CREATE TABLE audit_outbox (
        seq         BIGSERIAL PRIMARY KEY,
        event_id    TEXT NOT NULL UNIQUE,
        occurred_at TIMESTAMPTZ NOT NULL,
        merchant_id TEXT,
        payload     JSONB NOT NULL,
        created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE audit_chain (
        seq         BIGINT PRIMARY KEY CHECK (seq > 0),
        event_id    TEXT NOT NULL UNIQUE,
        outbox_seq  BIGINT NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        recorded_at TIMESTAMPTZ NOT NULL,
        prev_hash   CHAR(64) NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
        hash        CHAR(64) NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$'),
        canonical   TEXT NOT NULL,
        chained_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE audit_sink_cursors (
        sink       TEXT PRIMARY KEY,
        last_seq   BIGINT NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE FUNCTION audit_chain_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_chain is append-only (% refused)', TG_OP;
    END
    $$
    """,
    """
    CREATE TRIGGER audit_chain_append_only
        BEFORE UPDATE OR DELETE ON audit_chain
        FOR EACH ROW EXECUTE FUNCTION audit_chain_append_only()
    """,
)

DOWNGRADE = (
    "DROP TRIGGER IF EXISTS audit_chain_append_only ON audit_chain",
    "DROP FUNCTION IF EXISTS audit_chain_append_only()",
    "DROP TABLE IF EXISTS audit_sink_cursors",
    "DROP TABLE IF EXISTS audit_chain",
    "DROP TABLE IF EXISTS audit_outbox",
)


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
