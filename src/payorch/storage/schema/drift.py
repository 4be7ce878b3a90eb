"""What ``alembic check`` compares between this package's MetaData and a migrated database.

Left out, by asking the catalog rather than matching names: the hash partitions (``charges_p000``
...) with their indexes and constraints, the foreign keys Postgres derives from a parent's onto each
partition it references, and Alembic's own version table.

Added to what Alembic compares by itself: check constraints (by name and by definition), each
index's predicate and ``INCLUDE`` columns, and each table's ``PARTITION BY``, which Alembic does not
look at. A definition is compared as Postgres prints it back: every expression, from the MetaData
and from the catalog alike, is added as a check to an empty temporary table with its table's
columns, inside a savepoint that is then rolled back. So ``status IN ('a', 'b')`` equals
``status = ANY (ARRAY['a'::text, 'b'::text])`` without any guessing at SQL text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import CheckConstraint, Column, MetaData, Table, text
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ClauseElement, literal_column

NameFilter = Callable[[str | None, str, Mapping[str, str | None]], bool]
PLUGIN_NAME = "payorch.storage.schema.drift"

_PARTITIONS = text(
    "SELECT relname FROM pg_class WHERE relispartition AND relnamespace = current_schema()::regnamespace"
)
# A constraint with a parent constraint exists because of that parent: migrating the parent made it.
_DERIVED_CONSTRAINTS = text(
    "SELECT rel.relname, con.conname FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid "
    "WHERE con.conparentid <> 0 AND rel.relnamespace = current_schema()::regnamespace"
)
_PARTITION_KEY = text(
    "SELECT pg_get_partkeydef(oid) FROM pg_class "
    "WHERE relname = :table AND relnamespace = current_schema()::regnamespace"
)
_PROBE_DEFINITIONS = text(
    "SELECT conname, pg_get_constraintdef(oid, true) FROM pg_constraint "
    "WHERE conrelid = 'payorch_drift_probe'::regclass AND contype = 'c'"
)


def include_name(connection: Connection, *, version_table: str = "alembic_version") -> NameFilter:
    """An Alembic ``include_name`` hook that keeps only what the migrations declare themselves.

    The catalog is read on first use, when autogenerate starts comparing: by then every partition
    exists, and a plain upgrade never pays for the query.
    """
    partitions: set[str] = set()
    derived: set[tuple[str, str]] = set()
    loaded = False

    def keep(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
        nonlocal loaded
        if not loaded:
            partitions.update(connection.execute(_PARTITIONS).scalars())
            derived.update((str(rel), str(con)) for rel, con in connection.execute(_DERIVED_CONSTRAINTS))
            loaded = True
        if type_ == "table":
            return name != version_table and name not in partitions
        table = parent_names.get("table_name")
        if table in partitions:
            return False
        return not (table is not None and name is not None and (table, name) in derived)

    return keep


def canonical(connection: Connection, table: Table, expressions: Mapping[str, ClauseElement]) -> dict[str, str]:
    """Each boolean expression over ``table``'s columns as Postgres prints it. Leaves nothing behind.

    The expressions are checks on an empty temporary table with ``table``'s columns: the MetaData's
    own for its expressions, the reflected ones for the catalog's, so a column that exists on one
    side only is no error.
    """
    if not expressions:
        return {}
    probe = Table(
        "payorch_drift_probe",
        MetaData(),
        *(Column(column.name, column.type) for column in table.columns),
        prefixes=["TEMPORARY"],
    )
    names = {key: f"probe_{n}" for n, key in enumerate(expressions)}
    options = {"literal_binds": True, "include_table": False}
    additions = ", ".join(
        f"ADD CONSTRAINT {names[key]} CHECK ({expression.compile(connection, compile_kwargs=options)})"
        for key, expression in expressions.items()
    )
    with connection.begin_nested() as savepoint:
        probe.create(connection)
        connection.exec_driver_sql(f"ALTER TABLE payorch_drift_probe {additions}")
        printed = {str(name): str(definition) for name, definition in connection.execute(_PROBE_DEFINITIONS)}
        savepoint.rollback()
    return {key: printed[name] for key, name in names.items()}


def _differ(
    connection: Connection, metadata_table: Table, conn_table: Table, pairs: Mapping[str, tuple[ClauseElement, str]]
) -> set[str]:
    """The names whose MetaData expression and reflected SQL Postgres prints differently."""
    wanted = canonical(connection, metadata_table, {name: expression for name, (expression, _) in pairs.items()})
    found = canonical(connection, conn_table, {name: literal_column(sql) for name, (_, sql) in pairs.items()})
    return {name for name in pairs if wanted[name] != found[name]}


@dataclass(frozen=True, slots=True)
class _Tables:
    """One table as the MetaData declares it (``wanted``) and as Alembic reflected it (``found``)."""

    context: AutogenContext
    connection: Connection
    schema: str | None
    name: str
    wanted: Table
    found: Table


def _check_ops(tables: _Tables) -> list[ops.MigrateOperation]:
    wanted = {str(ck.name): ck for ck in tables.wanted.constraints if isinstance(ck, CheckConstraint) and ck.name}
    existing = {
        str(ck["name"]): ck["sqltext"]
        for ck in tables.context.inspector.get_check_constraints(tables.name, schema=tables.schema)
        if tables.context.run_name_filters(
            ck["name"], "check_constraint", {"table_name": tables.name, "schema_name": tables.schema}
        )
    }
    pairs = {name: (wanted[name].sqltext, existing[name]) for name in wanted.keys() & existing.keys()}
    changed = _differ(tables.connection, tables.wanted, tables.found, pairs)
    dropped: list[ops.MigrateOperation] = [
        ops.DropConstraintOp.from_constraint(
            CheckConstraint(literal_column(existing[name]), name=name, table=tables.found)
        )
        for name in sorted(existing.keys() - wanted.keys() | changed)
    ]
    added = [
        ops.AddConstraintOp.from_constraint(wanted[name]) for name in sorted(wanted.keys() - existing.keys() | changed)
    ]
    return dropped + added


def _index_option_ops(tables: _Tables, settled: set[str]) -> list[ops.MigrateOperation]:
    """Indexes whose predicate or INCLUDE columns differ, recreated; ``settled`` ones Alembic already did."""
    existing = {
        str(ix["name"]): ix.get("dialect_options", {})
        for ix in tables.context.inspector.get_indexes(tables.name, schema=tables.schema)
    }
    wanted = {str(ix.name): ix for ix in tables.wanted.indexes if ix.name in existing and ix.name not in settled}
    changed: set[str] = set()
    predicates: dict[str, tuple[ClauseElement, str]] = {}
    for name, index in wanted.items():
        options = index.dialect_options["postgresql"]
        include = [getattr(column, "name", column) for column in options.get("include") or ()]
        existing_include = list(existing[name].get("postgresql_include") or ())
        where, existing_where = options.get("where"), existing[name].get("postgresql_where")
        if include != existing_include or (where is None) != (existing_where is None):
            changed.add(name)
        elif where is not None and existing_where is not None:
            predicates[name] = (where, existing_where)
    changed |= _differ(tables.connection, tables.wanted, tables.found, predicates)
    reflected = {str(ix.name): ix for ix in tables.found.indexes}
    recreated: list[ops.MigrateOperation] = []
    for name in sorted(changed):
        recreated += [
            ops.DropIndexOp.from_index(reflected.get(name, wanted[name])),
            ops.CreateIndexOp.from_index(wanted[name]),
        ]
    return recreated


class PartitioningDiffers(ops.ExecuteSQLOp):
    """Alembic has no operation for a changed ``PARTITION BY`` (a table is partitioned only when it
    is created), so the difference is reported as a SQL comment, which says the same both ways."""

    def reverse(self) -> PartitioningDiffers:
        return self


def _partitioning(key: str | None) -> str:
    return f"PARTITION BY {key}" if key else "not partitioned"


def _partitioning_ops(tables: _Tables) -> list[ops.MigrateOperation]:
    wanted = tables.wanted.dialect_options["postgresql"].get("partition_by") or None
    found = tables.connection.execute(_PARTITION_KEY, {"table": tables.name}).scalar_one_or_none() or None
    if wanted == found:
        return []
    return [
        PartitioningDiffers(
            f"-- {tables.name}: {_partitioning(found)} in the database, {_partitioning(wanted)} in the MetaData"
        )
    ]


def _compare_table(
    autogen_context: AutogenContext,
    modify_ops: ops.ModifyTableOps,
    schema: str | None,
    tname: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> PriorityDispatchResult:
    """Alembic's table comparator signature; a table on one side only is Alembic's own business."""
    if conn_table is None or metadata_table is None:
        return PriorityDispatchResult.CONTINUE
    if autogen_context.connection is None:
        raise RuntimeError("schema drift is compared on a live connection, not offline")
    tables = _Tables(autogen_context, autogen_context.connection, schema, tname, metadata_table, conn_table)
    # An index Alembic already found different is recreated whole: its options need no second look.
    settled = {str(name) for op in modify_ops.ops if (name := getattr(op, "index_name", None))}
    modify_ops.ops += _check_ops(tables) + _index_option_ops(tables, settled) + _partitioning_ops(tables)
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    """Register the comparisons (Alembic's plugin entry point)."""
    plugin.add_autogenerate_comparator(_compare_table, "table", "payorch_drift", priority=DispatchPriority.LAST)


# Alembic keeps one registry of plugins per process while env.py runs again for every command:
# registering on import is registering once.
Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN_NAME)
