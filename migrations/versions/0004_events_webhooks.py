"""Events (trigger + NOTIFY) and webhook endpoints and deliveries.

Reserved slot in the revision chain; filled in by its issue.

Revision ID: 0004_events_webhooks
"""

from __future__ import annotations

revision = "0004_events_webhooks"
down_revision = "0003_refunds_payment_methods"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
