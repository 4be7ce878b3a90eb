"""What the pages show, read through the repositories (the dashboard writes no SQL of its own).

Every read of a merchant's objects is keyed by the merchant in view: another merchant's charge is
``NotFound``, as in the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from payorch.errors import NotFound
from payorch.storage import audit as audit_repo
from payorch.storage import charges as charges_repo
from payorch.storage import delivery_views, gateway_stats
from payorch.storage import events as events_repo
from payorch.storage import merchants as merchants_repo
from payorch.storage import refunds as refunds_repo
from payorch.storage.audit import AuditEntry, Verification
from payorch.storage.charge_search import ChargeFilter, search_charges
from payorch.storage.charges import Attempt, Charge
from payorch.storage.database import Database
from payorch.storage.delivery_views import DeliveryView
from payorch.storage.events import Event
from payorch.storage.gateway_stats import GatewayWindow
from payorch.storage.merchants import ApiKeySummary
from payorch.storage.refunds import Refund
from payorch.storage.webhooks import Endpoint

AUDIT_EVENTS_SHOWN = 200
DELIVERIES_SHOWN = 10
DEAD_LETTERS_SHOWN = 50


@dataclass(frozen=True, slots=True)
class ChargeView:
    charge: Charge
    attempts: list[Attempt]
    refunds: list[Refund]
    events: list[Event]
    """The charge's and its refunds' events, in the order they were written."""
    deliveries: list[DeliveryView]
    audit: list[AuditEntry]


@dataclass(frozen=True, slots=True)
class Window:
    """One time window of the Gateways page."""

    label: str
    since: datetime
    bucket_seconds: int
    by_gateway: dict[str, GatewayWindow]


@dataclass(frozen=True, slots=True)
class SinkStatus:
    sink: str
    cursor: int
    behind: int
    """Chain positions not shipped to this sink yet."""
    lag_seconds: float
    last_verification: Verification | None


WINDOWS = (("Last hour", timedelta(hours=1), 300), ("Last day", timedelta(days=1), 3600))
"""(label, span, bucket seconds) of the Gateways page's charts."""


class ConsoleReads:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def charge(self, merchant_id: str, charge_id: str) -> ChargeView:
        """A charge with its attempts, refunds, events, deliveries and audit events; ``NotFound`` for
        another merchant's (the same answer the API gives)."""
        async with self._db.connection() as connection:
            charge = await charges_repo.get_charge(connection, merchant_id, charge_id)
            if charge is None:
                raise NotFound(f"No such charge: '{charge_id}'", param="id")
            attempts = await charges_repo.list_attempts(connection, merchant_id, charge_id)
            refunds = await refunds_repo.list_for_charge(connection, merchant_id, charge_id)
            events = await events_repo.list_for_resource(connection, merchant_id, charge_id)
            for refund in refunds:
                events += await events_repo.list_for_resource(connection, merchant_id, refund.id)
            events.sort(key=lambda event: (event.created_at, event.id))
            deliveries = await delivery_views.deliveries_for_events(connection, merchant_id, [e.id for e in events])
            audit = await audit_repo.events_about(connection, merchant_id, charge_id, limit=AUDIT_EVENTS_SHOWN)
        return ChargeView(charge, attempts, refunds, events, deliveries, audit)

    async def search(
        self, search: ChargeFilter, *, limit: int, starting_after: str | None, ending_before: str | None
    ) -> tuple[list[Charge], bool]:
        async with self._db.connection() as connection:
            return await search_charges(
                connection, search, limit=limit, starting_after=starting_after, ending_before=ending_before
            )

    async def gateway_windows(self, merchant_id: str, now: datetime | None = None) -> list[Window]:
        moment = now or datetime.now(UTC)
        windows = []
        async with self._db.connection() as connection:
            for label, span, bucket in WINDOWS:
                since = moment - span
                found = await gateway_stats.attempt_window(connection, merchant_id, since=since, bucket_seconds=bucket)
                windows.append(Window(label, since, bucket, found))
        return windows

    async def endpoint_deliveries(self, merchant_id: str, endpoints: list[Endpoint]) -> dict[str, list[DeliveryView]]:
        async with self._db.connection() as connection:
            return {
                endpoint.id: await delivery_views.recent_deliveries(
                    connection, merchant_id, endpoint.id, limit=DELIVERIES_SHOWN
                )
                for endpoint in endpoints
            }

    async def dead_letters(self, merchant_id: str) -> list[DeliveryView]:
        async with self._db.connection() as connection:
            return await delivery_views.dead_letters(connection, merchant_id, limit=DEAD_LETTERS_SHOWN)

    async def api_keys(self, merchant_id: str) -> list[ApiKeySummary]:
        async with self._db.connection() as connection:
            return await merchants_repo.list_api_keys(connection, merchant_id)

    async def sinks(self, sink_names: list[str]) -> list[SinkStatus]:
        """Each configured sink's cursor, how far behind the chain's tip it is, since when, and its
        last verification."""
        async with self._db.connection() as connection:
            cursors = await audit_repo.get_cursors(connection)
            tip = await audit_repo.chain_tip_seq(connection)
            verifications = await audit_repo.last_verifications(connection)
            statuses = []
            for sink in sink_names:
                cursor = cursors.get(sink, 0)
                lag = await audit_repo.unshipped_lag(connection, cursor)
                statuses.append(SinkStatus(sink, cursor, max(tip - cursor, 0), lag, verifications.get(sink)))
        return statuses
