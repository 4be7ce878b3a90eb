"""Per-merchant gateway accounts, versioned routing configurations, and each charge's routing decision.

``gateway_accounts`` holds each account's credentials sealed with envelope encryption (accounts/crypto.py):
the ciphertext, the data key wrapped by the master key, and that key's id, so a rotation can
re-wrap row by row while both keys stay readable. ``routing_configs`` keeps every version a merchant
stored, per mode. ``charges.routing`` is the decision the charge was routed by, written in its first statement.

Revision ID: 0009_gateway_accounts_routing
"""

from __future__ import annotations

from alembic import op

revision = "0009_gateway_accounts_routing"
down_revision = "0008_event_sequence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE gateway_accounts (
            id text NOT NULL,
            merchant_id text NOT NULL,
            livemode boolean NOT NULL,
            name text NOT NULL CONSTRAINT gateway_accounts_name_check CHECK (name ~ '^[a-z][a-z0-9_]{0,31}$'),
            kind text NOT NULL,
            enabled boolean NOT NULL,
            timeout_ms integer,
            fees jsonb NOT NULL DEFAULT '{}'::jsonb,
            sealed_credentials bytea NOT NULL,
            wrapped_key bytea NOT NULL,
            wrap_key_id text NOT NULL,
            fingerprint text NOT NULL,
            secret_last4 text NOT NULL,
            revision integer NOT NULL DEFAULT 1 CONSTRAINT gateway_accounts_revision_check CHECK (revision >= 1),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT gateway_accounts_pkey PRIMARY KEY (merchant_id, id),
            CONSTRAINT gateway_accounts_merchant_id_name_key UNIQUE (merchant_id, name)
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX gateway_accounts_id_idx ON gateway_accounts (id)")
    op.execute("CREATE INDEX gateway_accounts_wrap_key_idx ON gateway_accounts (wrap_key_id)")
    op.execute(
        """
        CREATE TABLE routing_configs (
            merchant_id text NOT NULL,
            livemode boolean NOT NULL,
            version integer NOT NULL CONSTRAINT routing_configs_version_check CHECK (version >= 1),
            config jsonb NOT NULL,
            api_key_id text,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT routing_configs_pkey PRIMARY KEY (merchant_id, livemode, version)
        )
        """
    )
    op.execute("ALTER TABLE charges ADD COLUMN routing jsonb")


def downgrade() -> None:
    op.execute("ALTER TABLE charges DROP COLUMN routing")
    op.execute("DROP TABLE routing_configs")
    op.execute("DROP TABLE gateway_accounts")
