"""Customer authentication (3-D Secure / SCA) and stored credentials (issue 16).

- ``charges`` gains the ``requires_action`` status and what authentication needs: the request's
  ``return_url``, ``setup_future_usage``, ``off_session`` and ``customer_presence`` (the browser
  information and authentication data passed through to the gateway, so a lookup replays the very
  same request), the ``next_action`` the customer follows, and the ``authentication`` outcome.
- ``charge_attempts`` gains ``requires_action`` (the gateway holds the payment open; its
  ``next_check_at`` is the authentication's expiry, found through a partial index of its own) and
  ``authentication_requested`` (the SCA retry asked the issuer for a challenge).
- ``payment_methods`` keeps each gateway's network transaction id, sent on merchant-initiated charges.
- ``sandbox_payments`` can wait for its simulated customer (``requires_action``, with the
  ``return_url`` its authentication page sends the browser back to).
- The charge trigger emits ``charge.requires_action``, and ``charge.authentication_expired`` for an
  authentication abandoned until it expired; the charge snapshot carries the new public fields.

Revision ID: 0011_customer_authentication
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from alembic import op

revision = "0011_customer_authentication"
down_revision = "0010_dashboard"
branch_labels = None
depends_on = None

CHARGE_STATUSES = "'pending', 'processing', 'requires_action', 'authorized', 'succeeded', 'failed', 'canceled'"
OLD_CHARGE_STATUSES = "'pending', 'processing', 'authorized', 'succeeded', 'failed', 'canceled'"
ATTEMPT_STATUSES = "'pending', 'approved', 'declined', 'not_sent', 'unknown', 'requires_action', 'reversed', 'review'"
OLD_ATTEMPT_STATUSES = "'pending', 'approved', 'declined', 'not_sent', 'unknown', 'reversed', 'review'"
SANDBOX_STATUSES = "'processing', 'requires_action', 'authorized', 'captured', 'voided', 'declined'"
OLD_SANDBOX_STATUSES = "'processing', 'authorized', 'captured', 'voided', 'declined'"


def _status_check(table: str, statuses: str) -> list[str]:
    return [
        f"ALTER TABLE {table} DROP CONSTRAINT {table}_status_check",
        f"ALTER TABLE {table} ADD CONSTRAINT {table}_status_check CHECK (status IN ({statuses}))",
    ]


UPGRADE = [
    *_status_check("charges", CHARGE_STATUSES),
    "ALTER TABLE charges ADD COLUMN return_url text, ADD COLUMN setup_future_usage text "
    "CONSTRAINT charges_setup_future_usage_check CHECK (setup_future_usage IN ('off_session')), "
    "ADD COLUMN off_session boolean NOT NULL DEFAULT false, ADD COLUMN customer_presence jsonb, "
    "ADD COLUMN next_action jsonb, ADD COLUMN authentication jsonb",
    *_status_check("charge_attempts", ATTEMPT_STATUSES),
    "ALTER TABLE charge_attempts ADD COLUMN authentication_requested boolean NOT NULL DEFAULT false",
    "CREATE INDEX charge_attempts_authentication_idx ON charge_attempts (next_check_at) "
    "WHERE status = 'requires_action'",
    "ALTER TABLE payment_methods ADD COLUMN network_transaction_ids jsonb NOT NULL DEFAULT '{}'::jsonb",
    *_status_check("sandbox_payments", SANDBOX_STATUSES),
    "ALTER TABLE sandbox_payments ADD COLUMN capture boolean NOT NULL DEFAULT true, ADD COLUMN return_url text",
]

# The snapshot has the public shape of render_charge() in payments/schemas.py.
CHARGE_JSON = """
CREATE OR REPLACE FUNCTION payorch_charge_json(c charges) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'object', 'charge', 'amount', c.amount, 'amount_captured', c.amount_captured,
        'amount_refunded', c.amount_refunded, 'currency', c.currency, 'status', c.status,
        'captured', c.amount_captured > 0,
        'refunded', c.amount_refunded > 0 AND c.amount_refunded = c.amount_captured,
        'livemode', c.livemode, 'payment_method', c.payment_method,
        'card', CASE WHEN c.card_last4 IS NULL AND c.card_brand IS NULL THEN NULL ELSE jsonb_build_object(
            'brand', c.card_brand, 'last4', c.card_last4, 'exp_month', c.card_exp_month,
            'exp_year', c.card_exp_year) END,
        'gateway', c.gateway, 'gateway_reference', c.gateway_reference, 'failure_code', c.failure_code,
        'failure_message', c.failure_message, 'decline_code', c.decline_code, 'description', c.description,
        'metadata', c.metadata, 'routing', c.routing, 'next_action', c.next_action,
        'authentication', c.authentication,
        'created', floor(extract(epoch FROM c.created_at))::bigint,
        'updated', floor(extract(epoch FROM c.updated_at))::bigint)
$$
"""

CHARGE_TRIGGER = """
CREATE OR REPLACE FUNCTION payorch_charges_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    event_type text;
BEGIN
    IF NEW.status IS DISTINCT FROM old_status THEN
        event_type := CASE NEW.status
            WHEN 'processing' THEN 'charge.processing'
            WHEN 'requires_action' THEN 'charge.requires_action'
            WHEN 'authorized' THEN 'charge.authorized'
            WHEN 'succeeded' THEN CASE WHEN old_status = 'authorized' THEN 'charge.captured' ELSE 'charge.succeeded' END
            WHEN 'failed' THEN 'charge.failed'
            WHEN 'canceled' THEN CASE WHEN NEW.failure_code = 'authentication_expired'
                                      THEN 'charge.authentication_expired' ELSE 'charge.canceled' END
        END;  -- 'pending' is the row being born: no event until something happened
        IF event_type IS NOT NULL THEN
            PERFORM payorch_emit_event(NEW.merchant_id, NEW.livemode, event_type, 'charge', NEW.id,
                                       payorch_charge_json(NEW));
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.amount_refunded > OLD.amount_refunded THEN
        PERFORM payorch_emit_event(NEW.merchant_id, NEW.livemode, 'charge.refunded', 'charge', NEW.id,
                                   payorch_charge_json(NEW));
    END IF;
    RETURN NULL;
END
$$
"""


def _revision_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    if spec is None or spec.loader is None:
        raise RuntimeError(f"revision {name} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    for statement in (*UPGRADE, CHARGE_JSON, CHARGE_TRIGGER):
        op.execute(statement)


def downgrade() -> None:
    # The 0004 bodies of the snapshot and the trigger come back before the columns they do not read go.
    events = _revision_module("0004_events_webhooks")
    for statement in (
        "ALTER TABLE sandbox_payments DROP COLUMN capture, DROP COLUMN return_url",
        "ALTER TABLE payment_methods DROP COLUMN network_transaction_ids",
        "DROP INDEX charge_attempts_authentication_idx",
        "ALTER TABLE charge_attempts DROP COLUMN authentication_requested",
        *_status_check("charge_attempts", OLD_ATTEMPT_STATUSES),
        *_status_check("sandbox_payments", OLD_SANDBOX_STATUSES),
        events.CHARGE_TRIGGER.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
        events.CHARGE_JSON.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"),
        "ALTER TABLE charges DROP COLUMN return_url, DROP COLUMN setup_future_usage, DROP COLUMN off_session, "
        "DROP COLUMN customer_presence, DROP COLUMN next_action, DROP COLUMN authentication",
        *_status_check("charges", OLD_CHARGE_STATUSES),
    ):
        op.execute(statement)
