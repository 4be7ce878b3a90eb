"""A per-object sequence number on every event, so a receiver can order one object's events.

Events of one charge or refund can reach a receiver out of order (retries, several dispatchers),
and ``created`` has one-second resolution. ``events.sequence`` counts one object's events from 1
with no gaps, in the order they were written; unique per ``(merchant_id, resource_id, sequence)``
(merchant first, as every key of a hash-partitioned table).

``payorch_emit_event`` assigns it in the transaction that writes the event: under a transaction
advisory lock on the object (the row lock of the change that raises an event already orders the
triggers' writers; the lock also orders events no row change makes, such as ``charge.disputed``),
then the object's highest sequence plus one, read after the lock is held. Existing events are
numbered by ``created_at`` (``clock_timestamp()``), then id.

Revision ID: 0008_event_sequence
"""

from __future__ import annotations

from alembic import op

revision = "0008_event_sequence"
down_revision = "0007_refunds_unresolved_index"
branch_labels = None
depends_on = None

EMIT_EVENT = """
CREATE OR REPLACE FUNCTION payorch_emit_event(
    p_merchant_id text, p_livemode boolean, p_type text, p_resource_type text, p_resource_id text, p_payload jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    event_id text := payorch_new_id('evt');
    next_sequence integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('payorch_events:' || p_merchant_id || ':' || p_resource_id, 0));
    SELECT coalesce(max(sequence), 0) + 1 INTO next_sequence
      FROM events WHERE merchant_id = p_merchant_id AND resource_id = p_resource_id;
    INSERT INTO events (id, merchant_id, livemode, type, resource_type, resource_id, payload, sequence)
    VALUES (event_id, p_merchant_id, p_livemode, p_type, p_resource_type, p_resource_id, p_payload, next_sequence);
    PERFORM pg_notify('payorch_events', event_id);
    RETURN event_id;
END
$$
"""

# As 0004 wrote it, for the downgrade.
EMIT_EVENT_0004 = """
CREATE OR REPLACE FUNCTION payorch_emit_event(
    p_merchant_id text, p_livemode boolean, p_type text, p_resource_type text, p_resource_id text, p_payload jsonb
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    event_id text := payorch_new_id('evt');
BEGIN
    INSERT INTO events (id, merchant_id, livemode, type, resource_type, resource_id, payload)
    VALUES (event_id, p_merchant_id, p_livemode, p_type, p_resource_type, p_resource_id, p_payload);
    PERFORM pg_notify('payorch_events', event_id);
    RETURN event_id;
END
$$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE events ADD COLUMN sequence integer")
    op.execute(
        """
        UPDATE events AS e SET sequence = numbered.sequence
          FROM (SELECT merchant_id, id,
                       row_number() OVER (PARTITION BY merchant_id, resource_id ORDER BY created_at, id) AS sequence
                  FROM events) AS numbered
         WHERE e.merchant_id = numbered.merchant_id AND e.id = numbered.id
        """
    )
    op.execute("ALTER TABLE events ALTER COLUMN sequence SET NOT NULL")
    op.execute("ALTER TABLE events ADD CONSTRAINT events_sequence_check CHECK (sequence >= 1)")
    op.execute(
        "ALTER TABLE events ADD CONSTRAINT events_merchant_id_resource_id_sequence_key "
        "UNIQUE (merchant_id, resource_id, sequence)"
    )
    op.execute(EMIT_EVENT)


def downgrade() -> None:
    op.execute(EMIT_EVENT_0004)
    op.execute("ALTER TABLE events DROP CONSTRAINT events_merchant_id_resource_id_sequence_key")
    op.execute("ALTER TABLE events DROP COLUMN sequence")
