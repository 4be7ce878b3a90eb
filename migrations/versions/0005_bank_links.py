"""Bank links (OAuth 2.0 authorization-code + PKCE).

``bank_links`` is hash-partitioned on merchant_id like the money tables. ``bank_link_states`` maps the
SHA-256 of each single-use ``state`` to its link: the browser callback has no API key, so this small
unpartitioned table is how it finds the merchant, and its primary key keeps digests unique. Refresh
tokens are not here: they live only in the secrets store (``secret_name`` points at them).

Revision ID: 0005_bank_links
"""

from __future__ import annotations

from alembic import op

revision = "0005_bank_links"
down_revision = "0004_events_webhooks"
branch_labels = None
depends_on = None


def _partitions() -> int:
    # The count chosen when the first revision ran: every merchant-keyed table uses the same modulus.
    bind = op.get_bind()
    count = bind.exec_driver_sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'charges'::regclass").scalar_one()
    return int(count)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE bank_links (
            id                   text NOT NULL,
            merchant_id          text NOT NULL,
            livemode             boolean NOT NULL,
            user_reference       text NOT NULL CHECK (length(user_reference) BETWEEN 1 AND 255),
            status               text NOT NULL CHECK (status IN ('pending', 'active', 'failed')),
            scopes               text[] NOT NULL DEFAULT '{}',
            api_key_id           text,
            expires_at           timestamptz NOT NULL,
            failure_code         text,
            failure_message      text,
            secret_name          text,
            secret_version       text,
            secret_generation    integer NOT NULL DEFAULT 0 CHECK (secret_generation >= 0),
            refresh_lease_until  timestamptz,
            created_at           timestamptz NOT NULL DEFAULT now(),
            updated_at           timestamptz NOT NULL DEFAULT now(),
            linked_at            timestamptz,
            refreshed_at         timestamptz,
            PRIMARY KEY (merchant_id, id),
            CHECK (status <> 'active' OR (secret_name IS NOT NULL AND linked_at IS NOT NULL)),
            CHECK (status <> 'failed' OR failure_code IS NOT NULL)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    modulus = _partitions()
    for remainder in range(modulus):
        op.execute(
            f"CREATE TABLE bank_links_p{remainder:03d} PARTITION OF bank_links "
            f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
        )
    op.execute(
        """
        CREATE TABLE bank_link_states (
            state_hash       bytea PRIMARY KEY CHECK (length(state_hash) = 32),
            merchant_id      text NOT NULL,
            link_id          text NOT NULL,
            verifier_sealed  bytea CHECK (verifier_sealed IS NULL OR length(verifier_sealed) = 32),
            expires_at       timestamptz NOT NULL,
            consumed_at      timestamptz,
            created_at       timestamptz NOT NULL DEFAULT now(),
            FOREIGN KEY (merchant_id, link_id) REFERENCES bank_links (merchant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute("CREATE INDEX bank_link_states_link_idx ON bank_link_states (merchant_id, link_id)")


def downgrade() -> None:
    op.execute("DROP TABLE bank_link_states")
    op.execute("DROP TABLE bank_links")
