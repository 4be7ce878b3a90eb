"""Vaulted payment methods: our ``pm_`` id -> one reusable token per gateway. The only SQL for them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.storage.tables import payment_methods


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


def _payment_method(row: Row[Any]) -> PaymentMethod:
    mapping = row._mapping
    return PaymentMethod(**{name: mapping[name] for name in PaymentMethod.__slots__})


async def insert_payment_method(
    session: AsyncSession,
    *,
    id: str,
    merchant_id: str,
    livemode: bool,
    tokens: dict[str, str],
    card_brand: str | None,
    card_last4: str | None,
    card_exp_month: int | None,
    card_exp_year: int | None,
) -> PaymentMethod:
    row = (
        await session.execute(
            insert(payment_methods)
            .values(
                id=id,
                merchant_id=merchant_id,
                livemode=livemode,
                tokens=tokens,
                card_brand=card_brand,
                card_last4=card_last4,
                card_exp_month=card_exp_month,
                card_exp_year=card_exp_year,
            )
            .returning(payment_methods)
        )
    ).one()
    return _payment_method(row)


async def get_payment_method(
    session: AsyncSession, merchant_id: str, payment_method_id: str, *, livemode: bool
) -> PaymentMethod | None:
    query = select(payment_methods).where(
        payment_methods.c.merchant_id == merchant_id,
        payment_methods.c.id == payment_method_id,
        payment_methods.c.livemode == livemode,
    )
    row = (await session.execute(query)).one_or_none()
    return None if row is None else _payment_method(row)
