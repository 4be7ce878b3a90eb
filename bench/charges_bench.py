"""``make bench``: payorch's charge API against the floor of its stack (issue 9), in one invocation.

It makes a fresh database (``payorch_bench``), migrates it with ``payorch migrate``, serves payorch
as production does (``payorch serve``: uvicorn, Postgres, Redis when the rate limiter is wired) and
the baseline app (bench/baseline_app.py) on the same stack, then runs the scenarios with wrk (1
thread, pinned to the last CPU) and bench/constant_rate.py (open loop, pinned likewise):

1. POST /v1/charges, unique Idempotency-Keys, 64 connections: payorch vs baseline throughput
   (goal >= 50%), then p99 at half of payorch's throughput (goal <= 50 ms). With ``--routing-rules N``
   the bench merchant routes by an N-rule configuration none of whose rules matches the charge
   (bench/routing_config.py): compare with a run without it (goal: within 5%).
2. GET /v1/charges/{id} and a page of GET /v1/charges with few charges stored, then with 1,000,000
   across 10,000 merchants (bulk-loaded with generate_series, then ANALYZE): large/small <= 1.3.
3. The primary gateway hanging: p99 before its breaker opens and after (goal: after <= 2x healthy).
4. Replaying one idempotent request: throughput >= scenario 1's.

Rounds alternate baseline and payorch so a busy neighbour hits both; only ratios from one run are
compared. Prints JSON and rewrites the generated block of docs/benchmarks.md.

    .venv/bin/python bench/charges_bench.py [--workers 1] [--duration 10] [--rounds 3] [--routing-rules 5] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib as lib
from baseline_app import ensure_schema
from report import render
from routing_config import store_routing

CHARGE_BODY = {"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}}
HANG_BODY = {
    "amount": 1050,
    "currency": "usd",
    "payment_method": {"tokens": {"sandbox": "tok_timeout", "sandbox_backup": "tok_visa"}},
}
HEALTHY_TWO_BODY = {
    "amount": 1050,
    "currency": "usd",
    "payment_method": {"tokens": {"sandbox": "tok_visa", "sandbox_backup": "tok_visa"}},
}
GENEROUS = '{"requests": 1000000, "window_seconds": 60}'


def letters(count: int = 8) -> str:
    """A nonce for Idempotency-Keys with no digits: digit runs could read as a card number."""
    return "".join(secrets.choice(string.ascii_letters) for _ in range(count))


def payorch_env(args: argparse.Namespace, url: str, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYORCH_")}
    env.update(
        # As production runs it (Postgres and Redis by URL, JSON logs, background work left to
        # `payorch worker`), minus production's checks for AWS/webhook secrets a bench has no use for.
        PAYORCH_ENVIRONMENT="development",
        PAYORCH_LOG_JSON="true",
        PAYORCH_RUN_BACKGROUND_IN_API="false",
        PAYORCH_DATA_DIR=str(args.data_dir),
        PAYORCH_DATABASE_URL=url,
        PAYORCH_REDIS_URL=args.redis_url,
        PAYORCH_PORT=str(port),
        **({"PAYORCH_DB_POOL_SIZE": str(args.payorch_pool_size)} if args.payorch_pool_size else {}),
        # The limiter makes its Redis round trip on every request, but never refuses the benchmark.
        PAYORCH_RATELIMIT__KEY_LIMIT=GENEROUS,
        PAYORCH_RATELIMIT__IP_LIMIT=GENEROUS,
        PAYORCH_RATELIMIT__ROUTES=json.dumps(
            {"POST /v1/charges": {"name": "charges_create", "limit": json.loads(GENEROUS)}}
        ),
    )
    env.update(extra)
    return env


def payorch_server(args: argparse.Namespace, env: dict[str, str], port: int, logs: Path, name: str) -> lib.Server:
    argv = [str(lib.VENV_BIN / "payorch"), "serve", "--host", lib.HOST, "--port", str(port)]
    if args.workers > 1:
        argv += ["--workers", str(args.workers)]
    return lib.Server(name, argv, env, port, "/healthz", logs / f"{name}.log")


def baseline_server(args: argparse.Namespace, url: str, port: int, logs: Path) -> lib.Server:
    env = dict(os.environ)
    env.update(
        BASELINE_DATABASE_URL=url,
        BASELINE_REDIS_URL=args.redis_url,
        BASELINE_POOL_SIZE=str(args.pool_size),
        BASELINE_MAX_OVERFLOW=str(args.max_overflow),
    )
    argv = [
        str(lib.VENV_BIN / "uvicorn"), "baseline_app:create_app", "--factory", "--app-dir", str(lib.BENCH),
        "--host", lib.HOST, "--port", str(port), "--workers", str(args.workers), "--no-access-log",
        "--no-server-header", "--log-level", "warning",
    ]  # fmt: skip
    return lib.Server("baseline", argv, env, port, "/openapi.json", logs / "baseline.log")


def post_wrk(args: argparse.Namespace, wrk_bin: str, server: lib.Server, key: str, keymode: str) -> dict[str, Any]:
    """One wrk run, with the server's own CPU time per request (a figure the neighbours' load
    disturbs far less than throughput) and the database's (every ``postgres`` process)."""
    cpu, db_cpu = server.cpu_seconds(), lib.postgres_cpu()
    result = lib.wrk(
        wrk_bin,
        f"{server.base}/v1/charges",
        "post_charge.lua",
        [key, json.dumps(CHARGE_BODY), keymode, letters()],
        duration=args.duration,
        connections=args.connections,
    )
    requests = max(1, result["requests"])
    result["server_cpu_ms_per_request"] = round(1000 * (server.cpu_seconds() - cpu) / requests, 2)
    result["postgres_cpu_ms_per_request"] = round(1000 * (lib.postgres_cpu() - db_cpu) / requests, 2)
    return result


def scenario_charges(
    args: argparse.Namespace, wrk_bin: str, payorch: lib.Server, baseline: lib.Server, key: str
) -> Any:
    """Scenarios 1 and 4: rounds of baseline, payorch (unique keys), payorch (one replayed key)."""
    status, first = lib.run_async(
        lib.post_json(
            payorch.port, "/v1/charges", CHARGE_BODY, {"Authorization": f"Bearer {key}", "Idempotency-Key": "replay-1"}
        )
    )
    if status != 201:
        raise SystemExit(f"payorch answered {status} to a charge: {first}")
    lib.log("warm-up")
    for server in (baseline, payorch):
        lib.wrk(
            wrk_bin,
            f"{server.base}/v1/charges",
            "post_charge.lua",
            [key, json.dumps(CHARGE_BODY), "unique", "warm" + letters()],
            duration=3,
            connections=args.connections,
        )
    rounds = []
    for index in range(args.rounds):
        base = post_wrk(args, wrk_bin, baseline, key, "unique")
        profiler = lib.start_profile(payorch, args.profile, args.duration) if args.profile and index == 0 else None
        charge = post_wrk(args, wrk_bin, payorch, key, "unique")
        if profiler is not None:
            profiler.wait(timeout=args.duration + 60)
        replay = post_wrk(args, wrk_bin, payorch, key, "replay-1")
        rounds.append({"baseline": base, "payorch": charge, "replay": replay})
        lib.log(f"round {index + 1}: baseline {base['rps']} rps, payorch {charge['rps']}, replay {replay['rps']}")
    median = {name: statistics.median(r[name]["rps"] for r in rounds) for name in ("baseline", "payorch", "replay")}
    rate = median["payorch"] / 2
    headers = [f"Authorization: Bearer {key}"]
    lib.log(f"constant rate {rate:.0f}/s for {args.duration:g}s: payorch, then baseline")
    at_half = lib.constant_rate(
        f"{payorch.base}/v1/charges",
        rate=rate,
        duration=args.duration,
        headers=headers,
        body=json.dumps(CHARGE_BODY),
        unique_key=True,
        records=False,
    )
    base_at_half = lib.constant_rate(
        f"{baseline.base}/v1/charges",
        rate=rate,
        duration=args.duration,
        headers=headers,
        body=json.dumps(CHARGE_BODY),
        unique_key=True,
        records=False,
    )
    return {
        "rounds": rounds,
        "median_rps": median,
        "throughput_ratio": round(median["payorch"] / median["baseline"], 3),
        "at_half_rate": {"rate": round(rate, 1), "payorch": at_half, "baseline": base_at_half},
        "replay_ratio": round(median["replay"] / median["payorch"], 3),
    }


def read_paths(charge_ids: list[str]) -> dict[str, list[str]]:
    middle = charge_ids[len(charge_ids) // 2]
    return {
        "get": [f"/v1/charges/{charge_id}" for charge_id in charge_ids],
        "list": ["/v1/charges?limit=10", f"/v1/charges?limit=10&starting_after={middle}"],
    }


def measure_reads(
    args: argparse.Namespace, wrk_bin: str, payorch: lib.Server, key: str, dsn: str, reader: dict[str, Any]
) -> dict[str, Any]:
    paths = read_paths(reader["charges"])
    result: dict[str, Any] = {}
    for name, group in paths.items():
        lib.wrk(wrk_bin, payorch.base + "/", "get_paths.lua", [key, *group], duration=2, connections=16)
        result[name] = lib.wrk(
            wrk_bin, payorch.base + "/", "get_paths.lua", [key, *group], duration=args.duration, connections=16
        )
    merchant, charge = reader["merchant"], reader["charges"][0]
    result["db_get_ms"] = lib.run_async(
        lib.explain_ms(
            dsn, "SELECT * FROM charges WHERE merchant_id = $1 AND id = $2 AND livemode = false", merchant, charge
        )
    )
    result["db_list_ms"] = lib.run_async(
        lib.explain_ms(
            dsn,
            "SELECT * FROM charges WHERE merchant_id = $1 AND livemode = false ORDER BY id DESC LIMIT 11",
            merchant,
        )
    )
    count = lib.run_async(lib.fetch(dsn, "SELECT count(*) AS n FROM charges"))
    result["charges_stored"] = count[0]["n"]
    lib.log(
        f"reads with {result['charges_stored']} charges: get {result['get']['rps']} rps, list {result['list']['rps']}"
    )
    return result


def bulk_load(dsn: str, total: int, merchants: int, reader_merchant: str, reader_count: int) -> float:
    """``total`` charges across ``merchants`` merchants, the reader's own included: straight SQL."""
    others = merchants - 1
    per_merchant = (total - reader_count) // others
    rows = per_merchant * others
    started = time.monotonic()
    lib.run_async(
        lib.sql(
            dsn,
            f"""INSERT INTO merchants (id, name)
                SELECT 'mer_' || lpad(g::text, 26, '0'), 'Bulk merchant ' || g FROM generate_series(1, {others}) g""",  # noqa: S608
            # Merchant by merchant, ids ascending: the indexes are filled in key order, not at random.
            f"""INSERT INTO charges (id, merchant_id, livemode, amount, currency, status, capture, amount_captured,
                                     card_brand, card_last4, card_exp_month, card_exp_year, gateway,
                                     gateway_reference, created_at, updated_at)
                SELECT 'ch_' || lpad(to_hex(m * 100000 + k), 26, '0'), 'mer_' || lpad(m::text, 26, '0'), false,
                       1000 + k, 'usd', 'succeeded', true, 1000 + k, 'visa', '4242', 12, 2034,
                       'sandbox', 'sbx_' || m || '_' || k, now() - make_interval(secs => k), now()
                FROM generate_series(1, {others}) m, generate_series(1, {per_merchant}) k""",  # noqa: S608 - integers
            "ANALYZE merchants",
            "ANALYZE charges",
        )
    )
    elapsed = round(time.monotonic() - started, 1)
    lib.log(f"bulk-loaded {rows} charges across {others} merchants (+ {reader_merchant}) in {elapsed:.0f}s")
    return elapsed


def create_reader(payorch: lib.Server, env: dict[str, str], count: int) -> dict[str, Any]:
    """A merchant with ``count`` charges made through the API: what scenario 2 reads."""
    merchant = lib.run_cli(env, "merchants", "create", "--name", "Bench reader")
    key = lib.run_cli(env, "keys", "create", "--merchant", merchant).split()[1]

    async def make() -> list[str]:
        import httpx

        ids = []
        async with httpx.AsyncClient(base_url=payorch.base, timeout=30) as client:
            for index in range(count):
                response = await client.post(
                    "/v1/charges",
                    json=CHARGE_BODY,
                    headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"reader-{index}"},
                )
                if response.status_code != 201:
                    raise SystemExit(f"reader charge answered {response.status_code}: {response.text}")
                ids.append(response.json()["id"])
        return ids

    return {"merchant": merchant, "key": key, "charges": lib.run_async(make())}


def scenario_hanging(args: argparse.Namespace, dsn_url: str, key: str, logs: Path) -> dict[str, Any]:
    """Scenario 3: the primary sandbox hangs (``tok_timeout``) while the backup answers. Each phase gets
    a freshly started server, so the breaker's window holds only that phase's calls."""
    gateways = json.dumps(
        [
            {"name": "sandbox", "kind": "sandbox", "timeout_ms": args.hang_timeout_ms},
            {"name": "sandbox_backup", "kind": "sandbox"},
        ]
    )
    headers = [f"Authorization: Bearer {key}"]
    phases: dict[str, dict[str, Any]] = {}
    for phase, body in (("healthy", HEALTHY_TWO_BODY), ("hanging", HANG_BODY)):
        port = lib.free_port()
        env = payorch_env(args, dsn_url, port, PAYORCH_GATEWAYS=gateways, PAYORCH_ROUTING__FAILOVER_ON_UNKNOWN="true")
        server = payorch_server(args, env, port, logs, f"payorch-{phase}")
        server.start()
        try:
            lib.constant_rate(  # warm the pool and the key cache
                f"{server.base}/v1/charges", rate=2, duration=2, headers=headers,
                body=json.dumps(HEALTHY_TWO_BODY), unique_key=True, records=False,
            )  # fmt: skip
            phases[phase] = lib.constant_rate(
                f"{server.base}/v1/charges", rate=args.hang_rate, duration=args.hang_duration, headers=headers,
                body=json.dumps(body), unique_key=True, records=True,
            )  # fmt: skip
        finally:
            server.stop()
    records = phases["hanging"].pop("records")
    phases["healthy"].pop("records")
    # The breaker is open from the first request the backup answered without waiting on the
    # primary's timeout; everything due before it waited on the hanging primary first.
    fast = args.hang_timeout_ms * 0.8
    opened_at = min((r[0] for r in records if r[3] == "sandbox_backup" and r[1] < fast), default=None)
    before = [r[1] for r in records if opened_at is None or r[0] < opened_at]
    after = [r[1] for r in records if opened_at is not None and r[0] >= opened_at]
    from constant_rate import summary

    return {
        "primary_timeout_ms": args.hang_timeout_ms,
        "rate": args.hang_rate,
        "healthy": phases["healthy"]["latency"],
        "hanging_statuses": phases["hanging"]["statuses"],
        "breaker_opened_after_s": None if opened_at is None else round(opened_at, 2),
        "before_open": summary(before),
        "after_open": summary(after),
        "backup_answers": sum(1 for r in records if r[3] == "sandbox_backup"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "1")))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "10")))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "3")))
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=20, help="the baseline's database connections per process")
    parser.add_argument("--max-overflow", type=int, default=0, help="the baseline's extra connections under bursts")
    parser.add_argument(
        "--payorch-pool-size", type=int, default=0, help="payorch's one pool per process (default: its own default)"
    )
    parser.add_argument("--charges", type=int, default=1_000_000)
    parser.add_argument("--merchants", type=int, default=10_000)
    parser.add_argument("--reader-charges", type=int, default=100)
    parser.add_argument("--hang-timeout-ms", type=int, default=500)
    parser.add_argument("--hang-rate", type=float, default=8.0)
    parser.add_argument("--hang-duration", type=float, default=12.0, help="seconds (under the breaker's 15 s open)")
    parser.add_argument("--scenarios", default="1,2,3,4")
    parser.add_argument(
        "--routing-rules",
        type=int,
        default=0,
        help="store this many routing rules (none matching the bench's charge) and a default for the bench "
        "merchant before scenario 1 (bench/routing_config.py); 0: no configuration, the static order",
    )
    parser.add_argument(
        "--admin-url", default=os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--database", default="payorch_bench")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--no-doc", action="store_true", help="print the JSON only")
    parser.add_argument("--profile", type=Path, help="py-spy the first payorch round of scenario 1 into this dir")
    parser.add_argument("--doc", type=Path, default=lib.ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--note", default="", help="a line saved with the figures (what changed)")
    args = parser.parse_args()
    wanted = set(args.scenarios.split(","))

    wrk_bin = lib.ensure_wrk()
    started = time.time()
    results: dict[str, Any] = {
        "command": "make bench " + " ".join(sys.argv[1:]),
        "machine": lib.machine(),
        "load_before": lib.load_average(),
        "workers": args.workers,
        "duration_s": args.duration,
        "note": args.note,
        "git": lib.git_head(),
    }
    logs = Path(tempfile.mkdtemp(prefix="payorch-bench-"))
    args.data_dir = logs / "data"
    dsn, url = lib.database_urls(args.admin_url, args.database)
    lib.log(f"fresh database {args.database}; logs in {logs}")
    lib.run_async(lib.fresh_database(args.admin_url, args.database))
    port = lib.free_port()
    env = payorch_env(args, url, port)
    lib.run_cli(env, "migrate")
    lib.run_async(ensure_schema(url))
    merchant = lib.run_cli(env, "merchants", "create", "--name", "Bench merchant")
    key = lib.run_cli(env, "keys", "create", "--merchant", merchant).split()[1]
    payorch = payorch_server(args, env, port, logs, "payorch")
    baseline = baseline_server(args, url, lib.free_port(), logs)
    try:
        payorch.start()
        baseline.start()
        results["ratelimit_wired"] = lib.has_header(payorch.port, "/v1/charges", key, "ratelimit")
        reader = None
        if "2" in wanted:
            reader = create_reader(payorch, env, args.reader_charges)
            results["reads_small"] = measure_reads(args, wrk_bin, payorch, reader["key"], dsn, reader)
        if wanted & {"1", "4"}:
            if args.routing_rules:
                results["routing"] = lib.run_async(store_routing(payorch.base, key, args.routing_rules, CHARGE_BODY))
                lib.log(f"routing: {args.routing_rules} rules stored, the bench's charge takes the default")
            results["charges"] = scenario_charges(args, wrk_bin, payorch, baseline, key)
        if reader is not None:
            results["bulk_load_s"] = bulk_load(
                dsn, args.charges, args.merchants, reader["merchant"], len(reader["charges"])
            )
            results["reads_large"] = measure_reads(args, wrk_bin, payorch, reader["key"], dsn, reader)
    finally:
        payorch.stop()
        baseline.stop()
    if "3" in wanted:
        results["hanging"] = scenario_hanging(args, url, key, logs)
    results["load_after"] = lib.load_average()
    results["elapsed_s"] = round(time.time() - started)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
    saved = logs / "results.json"
    saved.write_text(json.dumps(results, indent=2))
    lib.log(f"results saved to {saved}")
    if not args.no_doc:
        lib.update_doc(args.doc, render(results))
        lib.log(f"updated {args.doc}")


if __name__ == "__main__":
    main()
