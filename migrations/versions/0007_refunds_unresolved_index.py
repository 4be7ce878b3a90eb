"""An index for the reconciler's claim of refunds left open.

Refunds whose request died (``pending``) or whose answer was lost (``processing``) are claimed by
``updated_at`` across every merchant on each reconciler round; without this index that is a scan of
every refunds partition. Partial, so it holds only the few open refunds.

Revision ID: 0007_refunds_unresolved_index
"""

from __future__ import annotations

from alembic import op

revision = "0007_refunds_unresolved_index"
down_revision = "0006_capture_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX refunds_unresolved_idx ON refunds (updated_at) WHERE status IN ('pending', 'processing')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX refunds_unresolved_idx")
