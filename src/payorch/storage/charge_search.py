"""Searching one merchant's charges (the dashboard's Payments page): a small builder on Statement.

Each filter is a constant fragment with its own named, typed parameter; a search joins the
fragments of the filters it uses, in one fixed order after ``merchant_id`` (always the first), and
the statement for that combination is compiled once and kept. No value is ever part of the text:
every one is bound. Only the filters given appear, so each combination gets a plan of its own
(a generic plan of one statement with every filter optional would never use the last4 index).

A date range is a range of ids: ids sort by creation time (``payorch.ids.time_bound``), so it reads
the merchant's key or list index, never ``created_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payorch.ids import time_bound
from payorch.storage.charges import CHARGE_COLUMNS, Charge
from payorch.storage.sql import Connection, Statement, row_to


@dataclass(frozen=True, slots=True)
class ChargeFilter:
    """What a person searches one merchant's charges by; None leaves a filter out."""

    merchant_id: str
    livemode: bool | None = None
    charge_id: str | None = None
    status: str | None = None
    gateway: str | None = None
    currency: str | None = None
    amount_min: int | None = None
    """Minor units, inclusive."""
    amount_max: int | None = None
    created_from: datetime | None = None
    """Inclusive."""
    created_before: datetime | None = None
    """Exclusive."""
    card_last4: str | None = None


# The fragment of each filter, in the order they are joined; the parameter is named after the field
# (the two dates become id bounds).
_FRAGMENTS: dict[str, str] = {
    "livemode": "livemode = :livemode::boolean",
    "charge_id": "id = :charge_id::text",
    "status": "status = :status::text",
    "gateway": "gateway = :gateway::text",
    "currency": "currency = :currency::text",
    "amount_min": "amount >= :amount_min::bigint",
    "amount_max": "amount <= :amount_max::bigint",
    "created_from": "id >= :created_from::text",
    "created_before": "id < :created_before::text",
    "card_last4": "card_last4 = :card_last4::text",
}
_OLDER = "id < :cursor::text"
_NEWER = "id > :cursor::text"

_STATEMENTS: dict[tuple[tuple[str, ...], str], Statement] = {}


def _statement(names: tuple[str, ...], direction: str) -> Statement:
    """The search over ``names`` walking ``direction`` (``first``, ``older``, ``newer``), built once."""
    statement = _STATEMENTS.get((names, direction))
    if statement is None:
        conditions = ["merchant_id = :merchant_id::text", *(_FRAGMENTS[name] for name in names)]
        if direction != "first":
            conditions.append(_OLDER if direction == "older" else _NEWER)
        order = "ASC" if direction == "newer" else "DESC"
        statement = Statement(
            f"SELECT {CHARGE_COLUMNS} FROM charges WHERE {' AND '.join(conditions)} "
            f"ORDER BY id {order} LIMIT :limit::integer"
        )
        _STATEMENTS[(names, direction)] = statement
    return statement


def _params(search: ChargeFilter) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for field in fields(ChargeFilter):
        value = getattr(search, field.name)
        if field.name == "merchant_id" or value is None:
            continue
        if isinstance(value, datetime):
            value = time_bound("ch", value)
        params[field.name] = value
    return params


async def search_charges(
    connection: Connection,
    search: ChargeFilter,
    *,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
) -> tuple[list[Charge], bool]:
    """One page of matching charges, newest first, and whether more exist beyond it in the direction
    of travel (``starting_after``: older than that id; ``ending_before``: newer)."""
    params = _params(search)
    names = tuple(name for name in _FRAGMENTS if name in params)
    direction, cursor = "first", None
    if ending_before is not None:
        direction, cursor = "newer", ending_before
    elif starting_after is not None:
        direction, cursor = "older", starting_after
    if cursor is not None:
        params["cursor"] = cursor
    rows = await _statement(names, direction).fetch(
        connection, merchant_id=search.merchant_id, limit=limit + 1, **params
    )
    page = [row_to(Charge, row) for row in rows]
    more = len(page) > limit
    page = page[:limit]
    return (list(reversed(page)) if direction == "newer" else page), more
