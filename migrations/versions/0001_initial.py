"""Initial schema: merchants, API keys, hash-partitioned charges, attempts and idempotency keys, the
sandbox gateway's ledger.

Money tables are ``PARTITION BY HASH (merchant_id)`` with native partitions; every primary key and
unique constraint includes ``merchant_id`` (DESIGN.md section 3). The partition count is chosen here,
at migration time: ``payorch migrate --partitions N`` (default 16).

Revision ID: 0001_initial
"""

from __future__ import annotations

import os

from alembic import context, op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

PARTITIONED = ("charges", "charge_attempts", "idempotency_keys")


def _partitions() -> int:
    config = context.config
    raw = (
        config.attributes.get("partitions")
        or context.get_x_argument(as_dictionary=True).get("partitions")
        or os.environ.get("PAYORCH_PARTITIONS")
        or 16
    )
    count = int(raw)
    if not 1 <= count <= 1024:
        raise ValueError(f"partitions must be between 1 and 1024, got {count}")
    return count


def _create_partitions(table: str, modulus: int) -> None:
    for remainder in range(modulus):
        op.execute(
            f"CREATE TABLE {table}_p{remainder:03d} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
        )


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE merchants (
            id          text PRIMARY KEY,
            name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
            created_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE api_keys (
            id            text PRIMARY KEY,
            merchant_id   text NOT NULL REFERENCES merchants (id),
            lookup        text NOT NULL UNIQUE,
            secret_hash   bytea NOT NULL,
            mode          text NOT NULL CHECK (mode IN ('test', 'live')),
            scopes        text[] NOT NULL DEFAULT '{}',
            created_at    timestamptz NOT NULL DEFAULT now(),
            last_used_at  timestamptz,
            revoked_at    timestamptz
        )
        """
    )
    op.execute("CREATE INDEX api_keys_merchant_idx ON api_keys (merchant_id)")
    op.execute(
        """
        CREATE TABLE charges (
            id                 text NOT NULL,
            merchant_id        text NOT NULL,
            livemode           boolean NOT NULL,
            amount             bigint NOT NULL CHECK (amount > 0),
            currency           text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
            status             text NOT NULL CHECK (status IN
                                 ('pending', 'processing', 'authorized', 'succeeded', 'failed', 'canceled')),
            capture            boolean NOT NULL,
            amount_captured    bigint NOT NULL DEFAULT 0 CHECK (amount_captured BETWEEN 0 AND amount),
            amount_refunded    bigint NOT NULL DEFAULT 0 CHECK (amount_refunded BETWEEN 0 AND amount_captured),
            payment_method     text,
            card_brand         text,
            card_last4         text CHECK (card_last4 ~ '^[0-9]{4}$'),
            card_exp_month     smallint CHECK (card_exp_month BETWEEN 1 AND 12),
            card_exp_year      smallint,
            gateway            text,
            gateway_reference  text,
            failure_code       text,
            failure_message    text,
            decline_code       text,
            description        text,
            metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
            idempotency_key    text,
            api_key_id         text,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (merchant_id, id)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    op.execute("CREATE INDEX charges_list_idx ON charges (merchant_id, livemode, id DESC)")
    op.execute(
        """
        CREATE TABLE charge_attempts (
            id                 text NOT NULL,
            merchant_id        text NOT NULL,
            charge_id          text NOT NULL,
            seq                smallint NOT NULL CHECK (seq >= 1),
            gateway            text NOT NULL,
            token              text NOT NULL,
            status             text NOT NULL CHECK (status IN
                                 ('pending', 'approved', 'declined', 'not_sent', 'unknown', 'reversed', 'review')),
            gateway_reference  text,
            raw_code           text,
            decline_code       text,
            message            text,
            latency_ms         integer,
            check_count        integer NOT NULL DEFAULT 0,
            next_check_at      timestamptz,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (merchant_id, id),
            UNIQUE (merchant_id, charge_id, seq)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    op.execute(
        "CREATE INDEX charge_attempts_unresolved_idx ON charge_attempts (next_check_at) "
        "WHERE status IN ('pending', 'unknown')"
    )
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            merchant_id      text NOT NULL,
            key              text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
            fingerprint      bytea NOT NULL,
            request_method   text NOT NULL,
            request_path     text NOT NULL,
            status           text NOT NULL CHECK (status IN ('in_progress', 'completed')),
            charge_id        text,
            response_status  smallint,
            response_body    bytea,
            created_at       timestamptz NOT NULL DEFAULT now(),
            locked_at        timestamptz NOT NULL DEFAULT now(),
            completed_at     timestamptz,
            PRIMARY KEY (merchant_id, key)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    op.execute("CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at)")
    modulus = _partitions()
    for table in PARTITIONED:
        _create_partitions(table, modulus)

    # The sandbox processor's own books: what a real gateway would hold on its side.
    op.execute(
        """
        CREATE TABLE sandbox_payments (
            gateway          text NOT NULL,
            reference        text NOT NULL,
            payment_id       text NOT NULL UNIQUE,
            merchant_id      text NOT NULL,
            charge_id        text NOT NULL,
            amount           bigint NOT NULL CHECK (amount > 0),
            currency         text NOT NULL,
            token            text NOT NULL,
            status           text NOT NULL CHECK (status IN
                               ('processing', 'authorized', 'captured', 'voided', 'declined')),
            amount_captured  bigint NOT NULL DEFAULT 0,
            amount_refunded  bigint NOT NULL DEFAULT 0,
            decline_code     text,
            created_at       timestamptz NOT NULL DEFAULT now(),
            updated_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (gateway, reference)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE sandbox_operations (
            gateway          text NOT NULL,
            idempotency_key  text NOT NULL,
            payment_id       text NOT NULL,
            kind             text NOT NULL CHECK (kind IN ('capture', 'void', 'refund')),
            amount           bigint NOT NULL DEFAULT 0,
            operation_id     text NOT NULL,
            created_at       timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (gateway, idempotency_key)
        )
        """
    )


def downgrade() -> None:
    for table in ("sandbox_operations", "sandbox_payments", "idempotency_keys", "charge_attempts", "charges"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP TABLE api_keys")
    op.execute("DROP TABLE merchants")
