"""The dashboard: its users, the last audit verifications, and the indexes its pages read by.

``dashboard_users`` holds merchants' users (``merchant_id`` set) and operators (no merchant). It is
not partitioned: sign-in finds a user by email alone, so the email is unique across merchants, and a
unique key without ``merchant_id`` rules out a Citus distributed table. Under Citus it becomes a
reference table (``create_reference_table('dashboard_users')``, like ``merchants``, which it
references): small, read on every dashboard request, written on sign-in.

``audit_verifications`` keeps each sink's verification runs (``payorch audit verify``, from the
command line or the dashboard's Audit page): one global table, like the chain it verifies.

Indexes for what the dashboard filters on:
- ``charges_card_last4_idx``: a charge found by its card's last four digits within one merchant
  (partial: a charge has no card summary until a gateway answered);
- ``webhook_deliveries_dead_idx``: one merchant's dead-lettered deliveries, newest first (partial:
  dead letters are few);
- ``audit_chain_subject_idx``: a charge's own audit events (the charge, its attempts and refunds
  name it as their resource or in ``details.charge``).

Revision ID: 0010_dashboard
"""

from __future__ import annotations

from alembic import op

revision = "0010_dashboard"
down_revision = "0009_gateway_accounts_routing"
branch_labels = None
depends_on = None

AUDIT_SUBJECT = (
    "COALESCE((canonical::jsonb #>> '{event,details,charge}'), (canonical::jsonb #>> '{event,resource,id}'))"
)


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE dashboard_users (
            id                  text PRIMARY KEY CHECK (id ~ '^du_[0-9a-z]{26}$'),
            merchant_id         text REFERENCES merchants (id),
            role                text NOT NULL CHECK (role IN ('merchant', 'operator')),
            email               text NOT NULL UNIQUE
                                CHECK (email = lower(email) AND length(email) BETWEEN 3 AND 254),
            password_hash       text NOT NULL,
            failed_sign_ins     integer NOT NULL DEFAULT 0 CHECK (failed_sign_ins >= 0),
            locked_until        timestamptz,
            session_generation  integer NOT NULL DEFAULT 0 CHECK (session_generation >= 0),
            last_sign_in_at     timestamptz,
            created_at          timestamptz NOT NULL DEFAULT now(),
            CHECK ((role = 'operator') = (merchant_id IS NULL))
        )
        """
    )
    op.execute("CREATE INDEX dashboard_users_merchant_idx ON dashboard_users (merchant_id)")
    op.execute(
        """
        CREATE TABLE audit_verifications (
            id           bigserial PRIMARY KEY,
            sink         text NOT NULL,
            ok           boolean NOT NULL,
            checked      integer NOT NULL CHECK (checked >= 0),
            last_seq     bigint NOT NULL CHECK (last_seq >= 0),
            summary      text NOT NULL,
            verified_by  text NOT NULL,
            verified_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX audit_verifications_sink_idx ON audit_verifications (sink, id DESC)")
    op.execute(
        "CREATE INDEX charges_card_last4_idx ON charges (merchant_id, card_last4, id) WHERE card_last4 IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX webhook_deliveries_dead_idx ON webhook_deliveries (merchant_id, id DESC) WHERE status = 'failed'"
    )
    op.execute(f"CREATE INDEX audit_chain_subject_idx ON audit_chain (({AUDIT_SUBJECT}))")


def downgrade() -> None:
    op.execute("DROP INDEX audit_chain_subject_idx")
    op.execute("DROP INDEX webhook_deliveries_dead_idx")
    op.execute("DROP INDEX charges_card_last4_idx")
    op.execute("DROP TABLE audit_verifications")
    op.execute("DROP TABLE dashboard_users")
