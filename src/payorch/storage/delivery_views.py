"""Reading webhook deliveries with where they went and what they carried (the dashboard's pages): the
webhooks aggregate's reads beside ``storage/webhooks.py``."""

from __future__ import annotations

from dataclasses import dataclass, fields

from payorch.storage.sql import Connection, Record, Statement, row_to
from payorch.storage.webhooks import Delivery


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery with where it went and what it carried."""

    delivery: Delivery
    url: str
    livemode: bool
    event_type: str
    resource_id: str


_DELIVERY = ", ".join(f"d.{field.name}" for field in fields(Delivery))
_VIEW = f"{_DELIVERY}, w.url, w.livemode, e.type AS event_type, e.resource_id"

# Through the merchant's endpoints (a handful), so each lookup is the (merchant, endpoint, event)
# unique index; deleted endpoints' deliveries stay readable.
_FOR_EVENTS = Statement(f"""
    SELECT {_VIEW}
      FROM webhook_endpoints AS w
      JOIN webhook_deliveries AS d ON d.merchant_id = w.merchant_id AND d.endpoint_id = w.id
      JOIN events AS e ON e.merchant_id = d.merchant_id AND e.id = d.event_id
     WHERE w.merchant_id = :merchant_id::text AND d.event_id = ANY (:event_ids::text[])
     ORDER BY d.id
""")

_RECENT = Statement(f"""
    SELECT {_VIEW}
      FROM webhook_deliveries AS d
      JOIN webhook_endpoints AS w ON w.merchant_id = d.merchant_id AND w.id = d.endpoint_id
      JOIN events AS e ON e.merchant_id = d.merchant_id AND e.id = d.event_id
     WHERE d.merchant_id = :merchant_id::text AND d.endpoint_id = :endpoint_id::text
     ORDER BY d.id DESC LIMIT :limit::integer
""")

_DEAD_LETTERS = Statement(f"""
    SELECT {_VIEW}
      FROM webhook_deliveries AS d
      JOIN webhook_endpoints AS w ON w.merchant_id = d.merchant_id AND w.id = d.endpoint_id
      JOIN events AS e ON e.merchant_id = d.merchant_id AND e.id = d.event_id
     WHERE d.merchant_id = :merchant_id::text AND d.status = 'failed'
     ORDER BY d.id DESC LIMIT :limit::integer
""")


def _view(row: Record) -> DeliveryView:
    return DeliveryView(row_to(Delivery, row), row["url"], row["livemode"], row["event_type"], row["resource_id"])


async def deliveries_for_events(connection: Connection, merchant_id: str, event_ids: list[str]) -> list[DeliveryView]:
    """Every delivery of these events (one object's), oldest first."""
    if not event_ids:
        return []
    return [_view(row) for row in await _FOR_EVENTS.fetch(connection, merchant_id=merchant_id, event_ids=event_ids)]


async def recent_deliveries(
    connection: Connection, merchant_id: str, endpoint_id: str, *, limit: int
) -> list[DeliveryView]:
    rows = await _RECENT.fetch(connection, merchant_id=merchant_id, endpoint_id=endpoint_id, limit=limit)
    return [_view(row) for row in rows]


async def dead_letters(connection: Connection, merchant_id: str, *, limit: int) -> list[DeliveryView]:
    """Deliveries that were given up on, newest first: what a person may send again by hand."""
    return [_view(row) for row in await _DEAD_LETTERS.fetch(connection, merchant_id=merchant_id, limit=limit)]
