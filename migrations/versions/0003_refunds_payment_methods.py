"""Refunds and vaulted payment methods, hash-partitioned on merchant_id like charges.

Revision ID: 0003_refunds_payment_methods
"""

from __future__ import annotations

from alembic import op

revision = "0003_refunds_payment_methods"
down_revision = "0002_audit"
branch_labels = None
depends_on = None


def _partitions() -> int:
    # The count chosen when the first revision ran: every money table uses the same modulus.
    bind = op.get_bind()
    count = bind.exec_driver_sql(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = 'charges'::regclass"
    ).scalar_one()
    return int(count)


def _create_partitions(table: str, modulus: int) -> None:
    for remainder in range(modulus):
        op.execute(
            f"CREATE TABLE {table}_p{remainder:03d} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
        )


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE payment_methods (
            id              text NOT NULL,
            merchant_id     text NOT NULL,
            livemode        boolean NOT NULL,
            tokens          jsonb NOT NULL,
            card_brand      text,
            card_last4      text CHECK (card_last4 ~ '^[0-9]{4}$'),
            card_exp_month  smallint CHECK (card_exp_month BETWEEN 1 AND 12),
            card_exp_year   smallint,
            created_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (merchant_id, id)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    op.execute(
        """
        CREATE TABLE refunds (
            id                 text NOT NULL,
            merchant_id        text NOT NULL,
            charge_id          text NOT NULL,
            livemode           boolean NOT NULL,
            amount             bigint NOT NULL CHECK (amount > 0),
            currency           text NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
            status             text NOT NULL CHECK (status IN ('pending', 'processing', 'succeeded', 'failed')),
            reason             text,
            gateway            text NOT NULL,
            gateway_reference  text,
            failure_code       text,
            failure_message    text,
            metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at         timestamptz NOT NULL DEFAULT now(),
            updated_at         timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (merchant_id, id)
        ) PARTITION BY HASH (merchant_id)
        """
    )
    op.execute("CREATE INDEX refunds_charge_idx ON refunds (merchant_id, charge_id)")
    modulus = _partitions()
    _create_partitions("payment_methods", modulus)
    _create_partitions("refunds", modulus)


def downgrade() -> None:
    op.execute("DROP TABLE refunds")
    op.execute("DROP TABLE payment_methods")
