"""Bank links (OAuth 2.0 authorization-code + PKCE).

Reserved slot in the revision chain; filled in by its issue.

Revision ID: 0005_bank_links
"""

from __future__ import annotations

revision = "0005_bank_links"
down_revision = "0004_events_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
