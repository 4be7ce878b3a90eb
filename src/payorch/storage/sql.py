"""The one way payorch writes SQL: :class:`Statement`.

A statement is written once (a module constant) with named, typed parameters, ``:merchant_id::text``,
and compiled at import to asyncpg's positional form (``$1::text``). A call binds every value by
name: a missing or unexpected name fails before anything is sent, and no value is ever spliced
into the text. Every parameter carries a cast, so the server never guesses a type and a statement
plans the same way on every connection (generic plans, docs/architecture.md).

Fragments shared by several statements (the idempotency key's CTE, the audit outbox's CTE) are
plain strings of named placeholders owned by the repository of their table; statements compose
them at import.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeAlias, TypeVar

import asyncpg

Connection: TypeAlias = asyncpg.Connection
"""A connection from :class:`payorch.storage.database.Database`: pooled, in a transaction, or
dedicated. Repositories take one and never commit."""

Record: TypeAlias = asyncpg.Record

# A placeholder is ``:name`` directly followed by its cast ``::type``; a plain ``::type`` cast is
# not one (the name must not follow a colon). Quoted literals, quoted identifiers and comments are
# skipped, so a colon inside them is left alone.
_TOKENS = re.compile(
    r"""
      (?P<literal>'(?:[^']|'')*')
    | (?P<identifier>"(?:[^"]|"")*")
    | (?P<comment>--[^\n]*|/\*.*?\*/)
    | (?<!:):(?P<name>[a-z_][a-z0-9_]*)(?P<cast>::)?
    """,
    re.VERBOSE | re.DOTALL,
)


class StatementError(ValueError):
    """A statement written or called wrongly: a programming error, never a user's."""


class Statement:
    """SQL with named, typed parameters, compiled once to asyncpg's ``$n`` form."""

    __slots__ = ("_positions", "names", "sql", "text")

    def __init__(self, sql: str) -> None:
        self.sql = sql
        names: list[str] = []
        positions: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            name = match.group("name")
            if name is None:
                return match.group(0)
            if match.group("cast") is None:
                raise StatementError(f"parameter :{name} has no type: write :{name}::<type>")
            if name not in positions:
                names.append(name)
                positions[name] = len(names)
            return f"${positions[name]}::"

        self.text = _TOKENS.sub(number, sql)
        self.names = tuple(names)
        self._positions = positions

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """The positional arguments for ``params``; every name, and only those, must be given."""
        if len(params) != len(self.names) or any(name not in params for name in self.names):
            missing = [name for name in self.names if name not in params]
            extra = [name for name in params if name not in self._positions]
            raise StatementError(f"statement parameters: missing {missing}, unexpected {extra}")
        return [params[name] for name in self.names]

    async def fetch(self, connection: Connection, **params: Any) -> list[Record]:
        rows: list[Record] = await connection.fetch(self.text, *self.args(params))
        return rows

    async def fetchrow(self, connection: Connection, **params: Any) -> Record | None:
        row: Record | None = await connection.fetchrow(self.text, *self.args(params))
        return row

    async def fetchval(self, connection: Connection, **params: Any) -> Any:
        return await connection.fetchval(self.text, *self.args(params))

    async def execute(self, connection: Connection, **params: Any) -> int:
        """Run it; the number of rows it wrote or returned (from the command tag)."""
        status: str = await connection.execute(self.text, *self.args(params))
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    def __repr__(self) -> str:
        return f"Statement({self.sql.strip()[:60]!r}...)"


T = TypeVar("T")


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def row_to(cls: type[T], row: Record) -> T:
    """A dataclass ``cls`` from a record that holds (at least) a column for each of its fields."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(field.name for field in fields(cls))  # type: ignore[arg-type]
    return cls(**{name: row[name] for name in names})


__all__ = ["Connection", "Record", "Statement", "StatementError", "row_to"]
