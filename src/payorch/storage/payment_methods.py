"""Vaulted payment methods: our ``pm_`` id -> one reusable token per gateway. The only SQL for them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime

from payorch.storage.sql import Connection, Statement, row_to


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    id: str
    merchant_id: str
    livemode: bool
    tokens: dict[str, str]
    """Reusable gateway tokens, by gateway name: never returned by the API."""
    card_brand: str | None
    card_last4: str | None
    card_exp_month: int | None
    card_exp_year: int | None
    created_at: datetime
    network_transaction_ids: dict[str, str] = field(default_factory=dict)
    """By gateway name: the network transaction id sent on merchant-initiated charges."""
    card_bin: str | None = None
    """The first 6 or 8 digits, as the gateway reported them at vault time."""
    card_country: str | None = None
    """The issuing country (ISO 3166-1 alpha-2), as the gateway reported it."""


_INSERTED = tuple(f.name for f in fields(PaymentMethod) if f.name != "network_transaction_ids")
_COLUMNS = ", ".join(f.name for f in fields(PaymentMethod))

_GET = Statement(
    f"""
    SELECT {_COLUMNS} FROM payment_methods
     WHERE merchant_id = :merchant_id::text AND id = :id::text AND livemode = :livemode::boolean
    """
)

# A resumed request whose first run had stored it finds it again, and answers with it.
_INSERT_OR_GET = Statement(
    f"""
    WITH p AS (
        INSERT INTO payment_methods (id, merchant_id, livemode, tokens, card_brand, card_last4, card_exp_month,
                                     card_exp_year, created_at, card_bin, card_country)
        VALUES (:id::text, :merchant_id::text, :livemode::boolean, :tokens::jsonb, :card_brand::text,
                :card_last4::text, :card_exp_month::integer, :card_exp_year::integer, :created_at::timestamptz,
                :card_bin::text, :card_country::text)
        ON CONFLICT (merchant_id, id) DO NOTHING
        RETURNING {_COLUMNS}
    )
    SELECT {_COLUMNS} FROM p
     UNION ALL
    SELECT {_COLUMNS} FROM payment_methods
     WHERE merchant_id = :merchant_id::text AND id = :id::text AND NOT EXISTS (SELECT 1 FROM p)
    """
)


# A stored credential's network transaction id: kept once, from the customer-present charge that set
# it up (a later one does not replace it).
_REMEMBER_NETWORK_TRANSACTION_ID = Statement(
    """
    UPDATE payment_methods
       SET network_transaction_ids = jsonb_build_object(:gateway::text, :network_transaction_id::text)
                                     || network_transaction_ids
     WHERE merchant_id = :merchant_id::text AND id = :id::text
    """
)


async def get_payment_method(
    connection: Connection, merchant_id: str, payment_method_id: str, *, livemode: bool
) -> PaymentMethod | None:
    row = await _GET.fetchrow(connection, merchant_id=merchant_id, id=payment_method_id, livemode=livemode)
    return None if row is None else row_to(PaymentMethod, row)


async def insert_or_get(connection: Connection, payment_method: PaymentMethod) -> PaymentMethod:
    """Store ``payment_method``, or return the one an earlier run of the same request stored."""
    row = await _INSERT_OR_GET.fetchrow(connection, **{name: getattr(payment_method, name) for name in _INSERTED})
    if row is None:
        raise RuntimeError("storing a payment method returned no row")
    return row_to(PaymentMethod, row)


async def remember_network_transaction_id(
    connection: Connection, merchant_id: str, payment_method_id: str, gateway: str, network_transaction_id: str
) -> None:
    """Keep ``gateway``'s network transaction id with the payment method (the first one stays)."""
    await _REMEMBER_NETWORK_TRANSACTION_ID.execute(
        connection,
        merchant_id=merchant_id,
        id=payment_method_id,
        gateway=gateway,
        network_transaction_id=network_transaction_id,
    )
