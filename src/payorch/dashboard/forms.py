"""What a person types, read into the values the services take: search filters and amounts.

Amounts are typed in major units of the currency (``10.50``) and become minor units through
``payorch.money``, which refuses more decimals than the currency has. A problem is a message to show
beside the form (status 400), never an exception page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from payorch.money import MAX_AMOUNT, UnknownCurrency, from_major_string, normalize_currency
from payorch.payments.states import ChargeStatus
from payorch.storage.charge_search import ChargeFilter

SEARCH_FIELDS = (
    "id",
    "status",
    "gateway",
    "currency",
    "amount_min",
    "amount_max",
    "created_from",
    "created_to",
    "last4",
    "mode",
)
_ID = re.compile(r"^ch_[0-9a-z]{26}$")
_LAST4 = re.compile(r"^[0-9]{4}$")
MODES = {"test": False, "live": True}


class AmountError(ValueError):
    pass


def parse_amount(typed: str, currency: str) -> int:
    """A positive amount in major units of ``currency`` (``"10.50"``) as minor units."""
    try:
        amount = from_major_string(Decimal(typed.replace(",", "").strip()), currency)
    except (InvalidOperation, ValueError) as error:
        raise AmountError(f"{typed!r} is not an amount in {currency.upper()}: {error}".rstrip(": ")) from None
    if amount <= 0 or amount > MAX_AMOUNT:
        raise AmountError(f"{typed!r} is not a positive amount {currency.upper()} allows.")
    return amount


@dataclass(slots=True)
class Search:
    """The Payments page's filters: what was typed (to show again) and the filter it makes."""

    typed: dict[str, str]
    filter: ChargeFilter
    problems: dict[str, str] = field(default_factory=dict)


def _day(typed: str, name: str, problems: dict[str, str]) -> date | None:
    try:
        return date.fromisoformat(typed)
    except ValueError:
        problems[name] = f"{typed!r} is not a date (YYYY-MM-DD)."
        return None


def _amounts(typed: Mapping[str, str], currency: str | None, problems: dict[str, str]) -> tuple[int | None, int | None]:
    bounds: list[int | None] = []
    for name in ("amount_min", "amount_max"):
        value = typed.get(name)
        if not value:
            bounds.append(None)
        elif currency is None:
            problems[name] = "Choose a currency to search by amount."
            bounds.append(None)
        else:
            try:
                bounds.append(parse_amount(value, currency))
            except AmountError as error:
                problems[name] = str(error)
                bounds.append(None)
    return bounds[0], bounds[1]


def read_search(merchant_id: str, query: Mapping[str, str], gateways: list[str]) -> Search:
    """The filters from the page's query string; each problem is named by its field."""
    typed = {name: query.get(name, "").strip() for name in SEARCH_FIELDS}
    problems: dict[str, str] = {}
    charge_id = typed["id"] or None
    if charge_id is not None and not _ID.match(charge_id):
        problems["id"] = "A charge id is ch_ and 26 letters and digits."
    status = typed["status"] or None
    if status is not None and status not in set(ChargeStatus):
        problems["status"] = f"Unknown status {status!r}."
    gateway = typed["gateway"] or None
    if gateway is not None and gateway not in gateways:
        problems["gateway"] = f"No gateway {gateway!r} is configured."
    currency = None
    if typed["currency"]:
        try:
            currency = normalize_currency(typed["currency"])
        except UnknownCurrency:
            problems["currency"] = f"{typed['currency']!r} is not an ISO 4217 currency."
    amount_min, amount_max = _amounts(typed, currency, problems)
    start = _day(typed["created_from"], "created_from", problems) if typed["created_from"] else None
    end = _day(typed["created_to"], "created_to", problems) if typed["created_to"] else None
    last4 = typed["last4"] or None
    if last4 is not None and not _LAST4.match(last4):
        problems["last4"] = "The last four digits of the card: four digits."
    mode = typed["mode"] or None
    if mode is not None and mode not in MODES:
        problems["mode"] = "Test or live."
    search = ChargeFilter(
        merchant_id=merchant_id,
        livemode=None if mode is None else MODES.get(mode),
        charge_id=charge_id,
        status=status,
        gateway=gateway,
        currency=currency,
        amount_min=amount_min,
        amount_max=amount_max,
        created_from=None if start is None else datetime.combine(start, time(), UTC),
        created_before=None if end is None else datetime.combine(end + timedelta(days=1), time(), UTC),
        card_last4=last4,
    )
    return Search(typed, search, problems)
