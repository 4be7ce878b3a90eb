"""Charges remember the capture amount sent to the gateway.

A capture is sent outside any transaction, so the amount asked for is written first, under the row
lock: every capture of one charge that reaches a gateway carries that amount and its idempotency
key, so two captures of different amounts can never both be sent, and a capture whose answer was
lost is retried with exactly what was sent.

Revision ID: 0006_capture_requests
"""

from __future__ import annotations

from alembic import op

revision = "0006_capture_requests"
down_revision = "0005_bank_links"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE charges ADD COLUMN capture_requested_amount bigint "
        "CHECK (capture_requested_amount IS NULL OR capture_requested_amount > 0)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE charges DROP COLUMN capture_requested_amount")
