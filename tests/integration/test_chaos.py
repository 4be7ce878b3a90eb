"""Chaos: 1,000 charges through the real app while the primary gateway (the Stripe fake) misbehaves at
random, then the books of every fake gateway are checked against what payorch says.

Faults come from a seeded RNG: every kind the fake knows (hang, reset before/after charging, 500
after charging, 503 and 429 before charging, garbage after charging, late success), queued on the
primary before each batch so they land on whichever requests reach it next (charges, replays,
searches). Some batches are storms that open the primary's breaker. Half the batches run with
``failover_on_unknown``, so late successes on the primary must be reversed by the reconciler.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from orchestration_support import (
    Fakes,
    Ledgers,
    charge_body,
    gateway_configs,
    reconcile_until_settled,
    running_fakes,
    runtime_for,
)
from tests.factories import MerchantFixture, create_merchant, query
from tests.fakes.stripe_server import Fault

from payorch.app import create_app
from payorch.runtime import Runtime

CHARGES = 1000
BATCH = 25
SEED = 20240503
FAULTS = list(Fault)
TOKENS = ["tok_visa"] * 18 + ["tok_chargeDeclined", "tok_chargeDeclinedInsufficientFunds"]
BREAKER = {"minimum_calls": 30, "failure_rate": 0.6, "window_seconds": 3, "open_seconds": 0.3, "half_open_probes": 3}


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


def _client(runtime: Runtime) -> httpx.AsyncClient:
    app = create_app(runtime.settings, runtime=runtime)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test", timeout=60)


async def _batch(
    client: httpx.AsyncClient, merchant: MerchantFixture, fakes: Fakes, rng: random.Random
) -> list[tuple[int, str, str]]:
    fault_rate = 0.7 if rng.random() < 0.1 else 0.25  # now and then a storm
    for _ in range(BATCH):
        if rng.random() < fault_rate:
            fakes.stripe.inject(rng.choice(FAULTS))
    bodies = [
        charge_body(stripe=rng.choice(TOKENS), amount=rng.randint(100, 99_999), capture=rng.random() < 0.8)
        for _ in range(BATCH)
    ]
    responses = await asyncio.gather(
        *(client.post("/v1/charges", json=body, headers=merchant.headers) for body in bodies)
    )
    fakes.stripe.clear_faults()
    fakes.stripe.release()  # held late successes land now, after payorch gave up on them
    results = []
    for response in responses:
        payload = response.json()
        charge_id = payload["error"]["charge"] if "error" in payload else payload["id"]
        results.append((response.status_code, charge_id, payload.get("status", "")))
    return results


async def _charges(runtime: Runtime, merchant_ids: list[str]) -> list[dict[str, object]]:
    rows = await query(
        runtime.db,
        "SELECT c.id, c.status, c.amount, c.gateway, c.gateway_reference, "
        "array_agg(a.id ORDER BY a.seq) AS attempts, array_agg(a.status ORDER BY a.seq) AS statuses "
        "FROM charges c JOIN charge_attempts a ON a.merchant_id = c.merchant_id AND a.charge_id = c.id "
        "WHERE c.merchant_id = ANY(:m) GROUP BY c.id, c.status, c.amount, c.gateway, c.gateway_reference",
        m=merchant_ids,
    )
    return [dict(row) for row in rows]


@pytest.mark.timeout(600)
async def test_chaos_on_the_primary_never_charges_anyone_twice(database_url: str, fakes: Fakes) -> None:
    rng = random.Random(SEED)
    configs = gateway_configs(fakes, stripe_ms=300, others_ms=3000)
    common = {"breaker": BREAKER, "db_pool_size": 8}
    async with (
        runtime_for(database_url, configs, routing={"deadline_ms": 6000}, **common) as plain,
        runtime_for(
            database_url, configs, routing={"deadline_ms": 6000, "failover_on_unknown": True}, **common
        ) as eager,
        _client(plain) as plain_client,
        _client(eager) as eager_client,
    ):
        merchants = {"plain": await create_merchant(plain), "eager": await create_merchant(eager)}
        reported: list[tuple[int, str, str]] = []
        for index in range(CHARGES // BATCH):
            mode = "eager" if index % 2 else "plain"
            client = eager_client if mode == "eager" else plain_client
            reported += await _batch(client, merchants[mode], fakes, rng)
        await fakes.stripe.until_idle(timeout=30)
        merchant_ids = [m.id for m in merchants.values()]
        await reconcile_until_settled(plain, merchant_ids, timeout=120)
        charges = {str(c["id"]): c for c in await _charges(plain, merchant_ids)}

    ledgers = Ledgers.take(fakes)
    statuses = Counter(code for code, _, _ in reported)
    assert len(reported) == CHARGES == len(charges)
    assert set(statuses) <= {201, 202, 402}, statuses
    assert statuses[202] > 0  # the chaos did leave outcomes unknown for the reconciler

    # No attempt was ever charged twice at a gateway.
    assert [a for a, n in ledgers.payments.items() if n > 1] == []
    # Nothing is left ambiguous.
    assert Counter(str(c["status"]) for c in charges.values()).keys() <= {"succeeded", "authorized", "failed"}
    all_attempt_statuses = Counter(s for c in charges.values() for s in c["statuses"])  # type: ignore[attr-defined]
    assert not {"pending", "unknown", "review"} & all_attempt_statuses.keys(), all_attempt_statuses
    assert all_attempt_statuses["reversed"] > 0  # late successes lost the race and were reversed
    assert all_attempt_statuses["not_sent"] > 0  # failovers happened

    for charge_id, charge in charges.items():
        held = ledgers.holdings(list(charge["attempts"]))  # type: ignore[call-overload]
        if charge["status"] in ("succeeded", "authorized"):
            # Every charge payorch reports as taken is held exactly once, at exactly one gateway.
            assert len(held) == 1, (charge_id, charge, held)
            [holding] = held
            assert (holding.gateway, holding.reference, holding.amount) == (
                charge["gateway"],
                charge["gateway_reference"],
                charge["amount"],
            ), charge_id
            assert holding.captured == (charge["status"] == "succeeded")
        else:
            assert held == [], (charge_id, charge, held)

    # What the API answered at the time is never contradicted by the books afterwards.
    for code, charge_id, status in reported:
        final = charges[charge_id]["status"]
        if code == 201:
            assert final == status, (charge_id, status, final)
        elif code == 402:
            assert final == "failed", charge_id
