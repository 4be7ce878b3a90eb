"""The one ``MetaData`` every table of payorch belongs to, and the column shapes the tables share.

The naming convention reproduces the names Postgres gave the constraints the migrations created
without naming them (``charges_pkey``, ``api_keys_lookup_key``, ``api_keys_merchant_id_fkey``,
``charges_amount_check``), so a constraint declared here has the same name as the one that exists.
A check constraint is named after its column (``name="amount"``); one Postgres named after the table
alone (``charges_check``) is spelled out with ``conv``. Indexes are always named explicitly.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import CheckConstraint, Column, DateTime, MetaData, PrimaryKeyConstraint, func, text
from sqlalchemy.sql.elements import conv

NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# ``postgresql_partition_by`` of the partitioned parents, as Postgres prints it (pg_get_partkeydef).
# Their children (``charges_p000`` ...) are made by the migrations, with the modulus chosen at
# migration time, and are not declared here.
BY_MERCHANT = "HASH (merchant_id)"

TIMESTAMPTZ = DateTime(timezone=True)
EMPTY_JSONB = text("'{}'::jsonb")
EMPTY_TEXT_ARRAY = text("'{}'::text[]")
ZERO = text("0")


def merchant_key() -> PrimaryKeyConstraint:
    """``PRIMARY KEY (merchant_id, id)``, merchant first, as migrated (a partitioned table's key must hold it)."""
    return PrimaryKeyConstraint("merchant_id", "id")


def stamped(name: str) -> Column[dt.datetime]:
    """``timestamptz NOT NULL DEFAULT now()``."""
    return Column(name, TIMESTAMPTZ, nullable=False, server_default=func.now())


def timestamp(name: str) -> Column[dt.datetime]:
    """A nullable ``timestamptz`` with no default."""
    return Column(name, TIMESTAMPTZ)


def card_summary_checks() -> tuple[CheckConstraint, CheckConstraint]:
    """The checks on a stored card summary (charges and payment methods): never more than last4."""
    return (
        CheckConstraint("card_last4 ~ '^[0-9]{4}$'", name="card_last4"),
        CheckConstraint("card_exp_month BETWEEN 1 AND 12", name="card_exp_month"),
    )


def table_check(sqltext: str, name: str) -> CheckConstraint:
    """A check Postgres named after the table (``bank_links_check``), taken by its exact name."""
    return CheckConstraint(sqltext, name=conv(name))
