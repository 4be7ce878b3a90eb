"""Events (written by triggers, NOTIFY of the id only), webhook endpoints and deliveries, and the
deduplication table for inbound gateway notifications (DESIGN.md section 9).

- ``events`` is hash-partitioned on merchant_id like the money tables, with the same modulus.
- ``payorch_new_id(prefix)`` makes ids in SQL with the layout of ``payorch.ids.new_id``: 10 Crockford
  base32 characters of Unix milliseconds (from ``clock_timestamp()``) then 16 random ones, so ids
  written by the database and by Python sort together by creation time.
- ``payorch_emit_event(...)`` inserts one event and ``pg_notify``s its id on ``payorch_events``.
  A NOTIFY payload is capped at 8000 bytes; an id never comes close, whatever the snapshot's size.
  NOTIFY is only a wake-up call: the dispatcher also polls ``events.fanned_out_at IS NULL``.
- AFTER INSERT OR UPDATE row triggers on ``charges`` and ``refunds`` (partitioned parents, so every
  partition inherits them) emit an event per status change, whoever made it: the API, the
  reconciler, or an operator in psql.

Revision ID: 0004_events_webhooks
"""

from __future__ import annotations

from alembic import op

revision = "0004_events_webhooks"
down_revision = "0003_refunds_payment_methods"
branch_labels = None
depends_on = None

PARTITIONED = ("events", "webhook_deliveries")


def _partitions() -> int:
    # The count chosen when the first revision ran: every hash-partitioned table uses the same modulus.
    bind = op.get_bind()
    count = bind.exec_driver_sql("SELECT count(*) FROM pg_inherits WHERE inhparent = 'charges'::regclass").scalar_one()
    return int(count)


def _create_partitions(table: str, modulus: int) -> None:
    for remainder in range(modulus):
        op.execute(
            f"CREATE TABLE {table}_p{remainder:03d} PARTITION OF {table} "
            f"FOR VALUES WITH (MODULUS {modulus}, REMAINDER {remainder})"
        )


NEW_ID = r"""
CREATE FUNCTION payorch_new_id(prefix text) RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    alphabet constant text := '0123456789abcdefghjkmnpqrstvwxyz';
    millis bigint := floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    random_bytes bytea := decode(md5(gen_random_uuid()::text || gen_random_uuid()::text), 'hex');
    head text := '';
    tail text := '';
BEGIN
    FOR i IN 1..10 LOOP
        head := substr(alphabet, (millis % 32)::int + 1, 1) || head;
        millis := millis / 32;
    END LOOP;
    -- md5 of two v4 UUIDs (244 random bits): 16 bytes, 5 bits taken from each.
    FOR i IN 0..15 LOOP
        tail := tail || substr(alphabet, (get_byte(random_bytes, i) & 31) + 1, 1);
    END LOOP;
    RETURN prefix || '_' || head || tail;
END
$$
"""

EMIT_EVENT = """
CREATE FUNCTION payorch_emit_event(
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

# The snapshot has the public shape of render_charge() in payments/schemas.py.
CHARGE_JSON = """
CREATE FUNCTION payorch_charge_json(c charges) RETURNS jsonb LANGUAGE sql STABLE AS $$
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
        'metadata', c.metadata, 'created', floor(extract(epoch FROM c.created_at))::bigint,
        'updated', floor(extract(epoch FROM c.updated_at))::bigint)
$$
"""

CHARGE_TRIGGER = """
CREATE FUNCTION payorch_charges_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    event_type text;
BEGIN
    IF NEW.status IS DISTINCT FROM old_status THEN
        event_type := CASE NEW.status
            WHEN 'processing' THEN 'charge.processing'
            WHEN 'authorized' THEN 'charge.authorized'
            WHEN 'succeeded' THEN CASE WHEN old_status = 'authorized' THEN 'charge.captured' ELSE 'charge.succeeded' END
            WHEN 'failed' THEN 'charge.failed'
            WHEN 'canceled' THEN 'charge.canceled'
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

REFUND_TRIGGER = """
CREATE FUNCTION payorch_refunds_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    snapshot jsonb := jsonb_build_object(
        'id', NEW.id, 'object', 'refund', 'charge', NEW.charge_id, 'amount', NEW.amount, 'currency', NEW.currency,
        'status', NEW.status, 'reason', NEW.reason, 'livemode', NEW.livemode, 'gateway', NEW.gateway,
        'gateway_reference', NEW.gateway_reference, 'failure_code', NEW.failure_code,
        'failure_message', NEW.failure_message, 'metadata', NEW.metadata,
        'created', floor(extract(epoch FROM NEW.created_at))::bigint);
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM payorch_emit_event(NEW.merchant_id, NEW.livemode, 'refund.created', 'refund', NEW.id, snapshot);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        IF NEW.status IN ('succeeded', 'failed') THEN
            PERFORM payorch_emit_event(NEW.merchant_id, NEW.livemode, 'refund.' || NEW.status, 'refund', NEW.id,
                                       snapshot);
        ELSIF TG_OP = 'UPDATE' THEN
            PERFORM payorch_emit_event(NEW.merchant_id, NEW.livemode, 'refund.updated', 'refund', NEW.id, snapshot);
        END IF;
    END IF;
    RETURN NULL;
END
$$
"""

TABLES = (
    """
    CREATE TABLE events (
        id             text NOT NULL CHECK (id ~ '^evt_[0-9a-z]{26}$'),
        merchant_id    text NOT NULL,
        livemode       boolean NOT NULL,
        type           text NOT NULL CHECK (type ~ '^[a-z_]+(\\.[a-z_]+)+$'),
        resource_type  text NOT NULL,
        resource_id    text NOT NULL,
        payload        jsonb NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
        fanned_out_at  timestamptz,
        PRIMARY KEY (merchant_id, id)
    ) PARTITION BY HASH (merchant_id)
    """,
    "CREATE INDEX events_fan_out_idx ON events (created_at) WHERE fanned_out_at IS NULL",
    "CREATE INDEX events_resource_idx ON events (merchant_id, resource_id, id)",
    """
    CREATE TABLE webhook_endpoints (
        id                           text NOT NULL CHECK (id ~ '^whe_[0-9a-z]{26}$'),
        merchant_id                  text NOT NULL REFERENCES merchants (id),
        livemode                     boolean NOT NULL,
        url                          text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
        enabled_events               text[] NOT NULL CHECK (cardinality(enabled_events) >= 1),
        description                  text,
        secret_ciphertext            bytea NOT NULL,
        previous_secret_ciphertext   bytea,
        previous_secret_expires_at   timestamptz,
        created_at                   timestamptz NOT NULL DEFAULT now(),
        deleted_at                   timestamptz,
        PRIMARY KEY (merchant_id, id)
    )
    """,
    "CREATE INDEX webhook_endpoints_active_idx ON webhook_endpoints (merchant_id, livemode) WHERE deleted_at IS NULL",
    """
    CREATE TABLE webhook_deliveries (
        id                text NOT NULL CHECK (id ~ '^whd_[0-9a-z]{26}$'),
        merchant_id       text NOT NULL,
        endpoint_id       text NOT NULL,
        event_id          text NOT NULL,
        status            text NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'canceled')),
        attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_at   timestamptz,
        give_up_after     timestamptz NOT NULL,
        last_status_code  smallint,
        last_error        text,
        delivered_at      timestamptz,
        created_at        timestamptz NOT NULL DEFAULT now(),
        updated_at        timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (merchant_id, id),
        UNIQUE (merchant_id, endpoint_id, event_id)
    ) PARTITION BY HASH (merchant_id)
    """,
    "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX webhook_deliveries_id_idx ON webhook_deliveries (id)",
    "CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (merchant_id, endpoint_id, id DESC)",
    """
    CREATE TABLE gateway_notifications (
        gateway      text NOT NULL,
        event_id     text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
        kind         text NOT NULL,
        attempt_id   text,
        reference    text,
        outcome      text NOT NULL,
        received_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (gateway, event_id)
    )
    """,
    # Inbound notifications name an attempt (our id, sent as metadata / order id / reference) or the
    # gateway's own reference, never the merchant: these find the row without knowing the partition.
    "CREATE INDEX charge_attempts_id_idx ON charge_attempts (id)",
    "CREATE INDEX charge_attempts_reference_idx ON charge_attempts (gateway, gateway_reference)",
    "CREATE INDEX refunds_reference_idx ON refunds (gateway, gateway_reference)",
)

TRIGGERS = (
    "CREATE TRIGGER payorch_charges_events AFTER INSERT OR UPDATE ON charges "
    "FOR EACH ROW EXECUTE FUNCTION payorch_charges_events()",
    "CREATE TRIGGER payorch_refunds_events AFTER INSERT OR UPDATE ON refunds "
    "FOR EACH ROW EXECUTE FUNCTION payorch_refunds_events()",
)


def upgrade() -> None:
    for statement in TABLES:
        op.execute(statement)
    modulus = _partitions()
    for table in PARTITIONED:
        _create_partitions(table, modulus)
    for statement in (NEW_ID, EMIT_EVENT, CHARGE_JSON, CHARGE_TRIGGER, REFUND_TRIGGER, *TRIGGERS):
        op.execute(statement)


def downgrade() -> None:
    for statement in (
        "DROP TRIGGER IF EXISTS payorch_refunds_events ON refunds",
        "DROP TRIGGER IF EXISTS payorch_charges_events ON charges",
        "DROP FUNCTION IF EXISTS payorch_refunds_events()",
        "DROP FUNCTION IF EXISTS payorch_charges_events()",
        "DROP FUNCTION IF EXISTS payorch_charge_json(charges)",
        "DROP FUNCTION IF EXISTS payorch_emit_event(text, boolean, text, text, text, jsonb)",
        "DROP FUNCTION IF EXISTS payorch_new_id(text)",
        "DROP INDEX IF EXISTS refunds_reference_idx",
        "DROP INDEX IF EXISTS charge_attempts_reference_idx",
        "DROP INDEX IF EXISTS charge_attempts_id_idx",
        "DROP TABLE IF EXISTS gateway_notifications",
        "DROP TABLE IF EXISTS webhook_deliveries",
        "DROP TABLE IF EXISTS webhook_endpoints",
        "DROP TABLE IF EXISTS events",
    ):
        op.execute(statement)
