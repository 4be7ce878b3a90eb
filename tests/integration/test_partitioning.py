"""The money tables really are hash-partitioned on merchant_id, and lookups prune to one partition."""

from __future__ import annotations

import httpx
import pytest
from tests.factories import charge_body, create_merchant, post_charge, query

from payorch.runtime import Runtime

MONEY_TABLES = ("charges", "charge_attempts", "idempotency_keys")


@pytest.mark.parametrize("table", MONEY_TABLES)
async def test_sixteen_hash_partitions_in_the_catalog(runtime: Runtime, table: str) -> None:
    [strategy] = await query(
        runtime.db,
        "SELECT partstrat::text AS partstrat, partnatts FROM pg_partitioned_table "
        "WHERE partrelid = CAST(:t AS regclass)",
        t=table,
    )
    bounds = [
        row[0]
        for row in await query(
            runtime.db,
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:t AS regclass)",
            t=table,
        )
    ]
    key_columns = [
        row[0]
        for row in await query(
            runtime.db,
            "SELECT a.attname FROM pg_index x JOIN pg_attribute a "
            "ON a.attrelid = x.indrelid AND a.attnum = ANY(x.indkey) "
            "WHERE x.indrelid = CAST(:t AS regclass) AND (x.indisprimary OR x.indisunique)",
            t=table,
        )
    ]
    assert strategy["partstrat"] == "h"
    assert strategy["partnatts"] == 1
    assert len(bounds) == 16
    assert sorted(bounds) == sorted(f"FOR VALUES WITH (modulus 16, remainder {r})" for r in range(16))
    assert "merchant_id" in key_columns


async def test_rows_land_in_the_partition_their_hash_selects(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchants = [await create_merchant(runtime) for _ in range(6)]
    for merchant in merchants:
        response = await post_charge(client, merchant, charge_body())
        assert response.status_code == 201
    rows = await query(
        runtime.db,
        "SELECT c.merchant_id, c.tableoid::regclass::text AS part, "
        "  satisfies_hash_partition('charges'::regclass, 16, "
        "    CAST(substring(c.tableoid::regclass::text FROM '_p([0-9]+)$') AS int), c.merchant_id) AS ok "
        "FROM charges c WHERE c.merchant_id = ANY(:ids)",
        ids=[m.id for m in merchants],
    )
    assert len(rows) == 6
    assert all(row["ok"] for row in rows), rows
    assert all(row["part"].startswith("charges_p") for row in rows)


async def test_lookup_by_id_prunes_to_one_partition(runtime: Runtime, client: httpx.AsyncClient) -> None:
    merchant = await create_merchant(runtime)
    charge = (await post_charge(client, merchant, charge_body())).json()
    # As the app sends it: bound parameters, planned once (generic plans), pruned when it runs.
    plan = [
        row[0]
        for row in await query(
            runtime.db,
            "EXPLAIN (COSTS OFF) SELECT * FROM charges WHERE merchant_id = :m::text AND id = :i::text",
            m=merchant.id,
            i=charge["id"],
        )
    ]
    scanned = [line for line in plan if "charges_p" in line]
    assert len(scanned) == 1, plan
