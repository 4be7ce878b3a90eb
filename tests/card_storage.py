"""What payorch keeps about one merchant, as text, for tests that prove a card number was kept nowhere:
its charges (metadata, description), events, idempotency keys and stored replies, audit outbox and
webhook deliveries."""

from __future__ import annotations

import unicodedata

from tests.factories import query

from payorch.runtime import Runtime

KEPT = {
    "charges": "SELECT row_to_json(t)::text FROM charges t WHERE merchant_id = :m",
    "events": "SELECT row_to_json(t)::text FROM events t WHERE merchant_id = :m",
    "idempotency_keys": (
        "SELECT row_to_json(t)::text || coalesce(convert_from(t.response_body, 'UTF8'), '') "
        "FROM idempotency_keys t WHERE merchant_id = :m"
    ),
    "audit_outbox": "SELECT row_to_json(t)::text FROM audit_outbox t WHERE merchant_id = :m",
    "webhook_deliveries": "SELECT row_to_json(t)::text FROM webhook_deliveries t WHERE merchant_id = :m",
}


def digits_of(row: str) -> str:
    """Every decimal digit of ``row`` (NFKC, any script) as ASCII, in order, nothing else."""
    return "".join(str(unicodedata.decimal(char)) for char in unicodedata.normalize("NFKC", row) if char.isdecimal())


async def kept(runtime: Runtime, merchant_id: str) -> dict[str, list[str]]:
    """Every row payorch keeps for ``merchant_id`` in the tables above, as JSON text, by table."""
    return {table: [str(row[0]) for row in await query(runtime.db, sql, m=merchant_id)] for table, sql in KEPT.items()}


async def assert_kept_nowhere(runtime: Runtime, merchant_id: str, digits: str) -> None:
    """No row of the merchant's holds the card number ``digits``, in any writing (other digits,
    separators between them)."""
    for table, rows in (await kept(runtime, merchant_id)).items():
        for row in rows:
            assert digits not in row, (table, row)
            assert digits not in digits_of(row), (table, row)


async def assert_nothing_kept(runtime: Runtime, merchant_id: str) -> None:
    """A refused request left no row at all: no charge, event, idempotency key, audit event or delivery."""
    assert await kept(runtime, merchant_id) == {table: [] for table in KEPT}
