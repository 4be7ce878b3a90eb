"""What one POST /v1/charges costs payorch's process, against the baseline app, in one invocation.

Both apps run in this process behind ``httpx.ASGITransport`` (no HTTP server, no sockets on the
client side) on a freshly migrated database, one request at a time, so the figures are each app's
own work and hold up far better on a busy machine than throughput does:

- CPU ms per request (user + system of this process, the client's small share included alike),
- Postgres CPU ms per request (every ``postgres`` process on the machine: run it on a quiet one),
- wall ms per request (one client in sequence: the sum of the round trips and the CPU),
- SQL statements, transactions and pool pings per payorch charge (asyncpg query loggers on the pool).

    .venv/bin/python bench/charge_cost.py [--requests 300] [--rounds 3] [--src DIR]

``--src`` puts another checkout's ``src/`` first on the path: an A/B of one change, same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import postgres_cpu  # this script's directory is first on sys.path

BENCH = Path(__file__).resolve().parent
CHARGE = {"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}}
GENEROUS = '{"requests": 1000000, "window_seconds": 60}'


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    client: Any, headers: dict[str, str], requests: int, *, replay: bool, counts: dict[str, int] | None = None
) -> dict[str, float]:
    nonce = "".join(secrets.choice(string.ascii_letters) for _ in range(10))

    async def one(index: int) -> None:
        key = "cost-replay" if replay else f"cost{nonce}x{index}"  # no long digit runs: not a card number
        response = await client.post("/v1/charges", json=CHARGE, headers={**headers, "Idempotency-Key": key})
        if response.status_code != 201:
            raise SystemExit(f"{response.status_code}: {response.text}")

    for index in range(10):
        await one(index)
    before = dict(counts or {})
    started, cpu, db_cpu = time.perf_counter(), cpu_now(), postgres_cpu()
    for index in range(requests):
        await one(index)
    result = {
        "cpu_ms": round(1000 * (cpu_now() - cpu) / requests, 2),
        "postgres_cpu_ms": round(1000 * (postgres_cpu() - db_cpu) / requests, 2),
        "wall_ms": round(1000 * (time.perf_counter() - started) / requests, 2),
    }
    for name, value in (counts or {}).items():
        result[name] = round((value - before[name]) / requests, 2)
    return result


async def measure_get(client: Any, headers: dict[str, str], paths: list[str], requests: int) -> dict[str, float]:
    """GETs of ``paths`` in turn: what reading a charge, or a page of them, costs."""
    for path in paths:
        await client.get(path, headers=headers)
    started, cpu = time.perf_counter(), cpu_now()
    for index in range(requests):
        response = await client.get(paths[index % len(paths)], headers=headers)
        if response.status_code != 200:
            raise SystemExit(f"{response.status_code}: {response.text}")
    return {
        "cpu_ms": round(1000 * (cpu_now() - cpu) / requests, 2),
        "wall_ms": round(1000 * (time.perf_counter() - started) / requests, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from baseline_app import create_app as create_baseline
    from baseline_app import ensure_schema
    from benchlib import database_urls, fresh_database, run_cli

    from payorch.app import create_app
    from payorch.runtime import Runtime
    from payorch.settings import Settings
    from payorch.storage import database as database_module

    _, url = database_urls(args.admin_url, args.database)
    await fresh_database(args.admin_url, args.database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYORCH_")}
    env.update(
        PAYORCH_ENVIRONMENT="development",
        PAYORCH_DATABASE_URL=url,
        PAYORCH_REDIS_URL=args.redis_url,
        PAYORCH_DATA_DIR=tempfile.mkdtemp(prefix="payorch-charge-cost-"),
        PAYORCH_RATELIMIT__KEY_LIMIT=GENEROUS,
        PAYORCH_RATELIMIT__IP_LIMIT=GENEROUS,
        PAYORCH_RATELIMIT__ROUTES=json.dumps(
            {"POST /v1/charges": {"name": "charges_create", "limit": json.loads(GENEROUS)}}
        ),
    )
    run_cli(env, "migrate")
    await ensure_schema(url)
    merchant = run_cli(env, "merchants", "create", "--name", "Cost merchant")
    key = run_cli(env, "keys", "create", "--merchant", merchant).split()[1]
    os.environ.update(env)
    os.environ.update(BASELINE_DATABASE_URL=url, BASELINE_REDIS_URL=args.redis_url)
    settings = Settings()
    counts = {"statements": 0, "transactions": 0, "pings": 0}

    opened = database_module.open_connection

    async def open_counted(config: Any) -> Any:
        connection = await opened(config)
        in_transaction = [False]

        def logged(record: Any) -> None:
            text = record.query.strip().upper()
            if text.startswith("BEGIN"):
                in_transaction[0] = True
                counts["transactions"] += 1
            elif text.startswith(("COMMIT", "ROLLBACK")):
                in_transaction[0] = False
            else:
                counts["statements"] += 1
                counts["pings"] += text == "SELECT 1"
                counts["transactions"] += not in_transaction[0]

        connection.add_query_logger(logged)
        return connection

    # Every connection the runtime opens reports each statement it runs (the bench's own
    # instrumentation: nothing in payorch counts them). A statement outside BEGIN is its own
    # transaction; the ones inside count once, by their BEGIN.
    database_module.open_connection = open_counted  # type: ignore[assignment]
    runtime = await Runtime.build(settings, url)
    payorch = create_app(settings, runtime=runtime)
    baseline = create_baseline()
    headers = {"Authorization": f"Bearer {key}"}
    rounds: list[dict[str, Any]] = []
    try:
        async with (
            baseline.router.lifespan_context(baseline),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=payorch), base_url="http://payorch") as ours,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=baseline), base_url="http://baseline") as floor,
        ):
            if args.charges_only:  # for a profiler: nothing but payorch charges
                charge = await measure(ours, headers, args.requests, replay=False, counts=counts)
                print(json.dumps({"payorch": charge}), file=sys.stderr)
                return {"payorch": charge}
            for _ in range(args.rounds):
                base = await measure(floor, headers, args.requests, replay=False)
                charge = await measure(ours, headers, args.requests, replay=False, counts=counts)
                replay = await measure(ours, headers, args.requests, replay=True, counts=counts)
                listed = (await ours.get("/v1/charges?limit=10", headers=headers)).json()["data"]
                get = await measure_get(ours, headers, [f"/v1/charges/{c['id']}" for c in listed], args.requests)
                page = await measure_get(ours, headers, ["/v1/charges?limit=10"], args.requests)
                rounds.append({"baseline": base, "payorch": charge, "replay": replay, "get": get, "list": page})
                print(json.dumps(rounds[-1]), file=sys.stderr)
    finally:
        await runtime.aclose()

    def median(name: str, field: str) -> float:
        return statistics.median(r[name][field] for r in rounds)

    return {
        "rounds": rounds,
        "payorch_cpu_ms": median("payorch", "cpu_ms"),
        "baseline_cpu_ms": median("baseline", "cpu_ms"),
        "payorch_postgres_cpu_ms": median("payorch", "postgres_cpu_ms"),
        "baseline_postgres_cpu_ms": median("baseline", "postgres_cpu_ms"),
        "replay_cpu_ms": median("replay", "cpu_ms"),
        "get_cpu_ms": median("get", "cpu_ms"),
        "list_cpu_ms": median("list", "cpu_ms"),
        "cpu_ratio": round(median("payorch", "cpu_ms") / median("baseline", "cpu_ms"), 2),
        "payorch_wall_ms": median("payorch", "wall_ms"),
        "baseline_wall_ms": median("baseline", "wall_ms"),
        "per_charge": {name: rounds[-1]["payorch"][name] for name in ("statements", "transactions", "pings")},
        "load": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--charges-only", action="store_true", help="only payorch charges (to profile them)")
    parser.add_argument("--src", type=Path, help="import payorch from this src/ directory instead")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="payorch_charge_cost")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.src is not None:
        sys.path.insert(0, str(args.src.resolve()))
        os.environ["PYTHONPATH"] = str(args.src.resolve())  # the CLI subprocesses (migrate) too
    sys.path.insert(0, str(BENCH))
    import payorch

    print(f"payorch from {Path(payorch.__file__).parent}", file=sys.stderr)
    json.dump(asyncio.run(run(args)), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
