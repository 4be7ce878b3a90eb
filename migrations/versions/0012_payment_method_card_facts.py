"""A vaulted payment method's BIN and issuing country, as its gateway reported them at vault time,
so routing rules on ``bin_prefix`` and ``issuing_country`` can match charges on a ``pm_`` id.

The checks keep the table from ever holding more of a card number than a BIN: 6 or 8 digits.

Revision ID: 0012_payment_method_card_facts
"""

from __future__ import annotations

from alembic import op

revision = "0012_payment_method_card_facts"
down_revision = "0011_customer_authentication"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: existing rows keep NULL (the fact was not asked for when they were vaulted).
    op.execute(
        """
        ALTER TABLE payment_methods
            ADD COLUMN card_bin text
                CONSTRAINT payment_methods_card_bin_check CHECK (card_bin ~ '^[0-9]{6}([0-9]{2})?$'),
            ADD COLUMN card_country text
                CONSTRAINT payment_methods_card_country_check CHECK (card_country ~ '^[A-Z]{2}$')
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE payment_methods DROP COLUMN card_country, DROP COLUMN card_bin")
