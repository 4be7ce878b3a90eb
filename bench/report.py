"""The generated block of docs/benchmarks.md from one run of bench/charges_bench.py."""

from __future__ import annotations

import statistics
from typing import Any


def _ok(passed: bool) -> str:
    return "met" if passed else "**not met**"


def _charges(result: dict[str, Any]) -> list[str]:
    charges = result["charges"]
    median = charges["median_rps"]
    half = charges["at_half_rate"]
    p99 = half["payorch"]["latency"]["p99_ms"]
    lines = [
        "| scenario | payorch | baseline | ratio | goal |",
        "|---|---|---|---|---|",
        f"| 1. POST /v1/charges, unique keys, {result.get('connections', 64)} connections (median of "
        f"{len(charges['rounds'])} rounds) | {median['payorch']:.0f} req/s | {median['baseline']:.0f} req/s | "
        f"{charges['throughput_ratio']:.2f} | >= 0.50: {_ok(charges['throughput_ratio'] >= 0.5)} |",
        f"| 1. p99 at a constant {half['rate']:.0f} req/s (half of payorch's) | {p99:.1f} ms "
        f"(p50 {half['payorch']['latency']['p50_ms']:.1f}) | {half['baseline']['latency']['p99_ms']:.1f} ms | | "
        f"<= 50 ms: {_ok(p99 <= 50)} |",
        f"| 4. replaying one Idempotency-Key | {median['replay']:.0f} req/s | | {charges['replay_ratio']:.2f} of "
        f"scenario 1 | >= 1.00: {_ok(charges['replay_ratio'] >= 1)} |",
    ]
    rounds = ", ".join(
        f"{r['payorch']['rps']:.0f}/{r['baseline']['rps']:.0f}/{r['replay']['rps']:.0f}" for r in charges["rounds"]
    )
    lines.append("")
    routing = result.get("routing")
    if routing:
        lines.append(
            f"The bench merchant routes by a {routing['rules']}-rule configuration (bench/routing_config.py) "
            "that every charge falls through to its default; compare with a run without `--routing-rules`."
        )
    lines.append(f"Rounds (payorch/baseline/replay req/s): {rounds}.")
    cpu = {
        name: statistics.median(r[name].get("server_cpu_ms_per_request", 0) for r in charges["rounds"])
        for name in ("payorch", "baseline", "replay")
    }
    db = {
        name: statistics.median(r[name].get("postgres_cpu_ms_per_request", 0) for r in charges["rounds"])
        for name in ("payorch", "baseline", "replay")
    }
    errors = sum(r["payorch"]["errors"] for r in charges["rounds"])  # non-2xx, socket errors, timeouts
    lines.append(
        f"Server CPU per request (median): payorch {cpu['payorch']:.1f} ms, baseline {cpu['baseline']:.1f} ms "
        f"({cpu['payorch'] / max(cpu['baseline'], 0.01):.1f}x), replay {cpu['replay']:.1f} ms; Postgres CPU per "
        f"request: payorch {db['payorch']:.1f} ms, baseline {db['baseline']:.1f} ms, replay {db['replay']:.1f} ms. "
        f"Non-2xx or failed payorch answers under full load: {errors}."
    )
    return lines


def _reads(result: dict[str, Any]) -> list[str]:
    small, large = result["reads_small"], result["reads_large"]
    lines = [
        "",
        f"Scenario 2: {small['charges_stored']:,} charges stored, then {large['charges_stored']:,} across "
        f"10,000+ merchants (bulk load {result.get('bulk_load_s', 0):.0f} s, then ANALYZE). Cost = 1 / throughput "
        "(16 connections); the database's own time is EXPLAIN ANALYZE's planning + execution, median of 30.",
        "",
        "| read | small: req/s, p99 | large: req/s, p99 | cost large/small | db ms small -> large | goal <= 1.3 |",
        "|---|---|---|---|---|---|",
    ]
    for name, label, db in (
        ("get", "GET /v1/charges/{id}", "db_get_ms"),
        ("list", "GET /v1/charges?limit=10", "db_list_ms"),
    ):
        ratio = small[name]["rps"] / large[name]["rps"]
        lines.append(
            f"| {label} | {small[name]['rps']:.0f}, {small[name]['p99_ms']:.1f} ms | {large[name]['rps']:.0f}, "
            f"{large[name]['p99_ms']:.1f} ms | {ratio:.2f} | {small[db]:.3f} -> {large[db]:.3f} | {_ok(ratio <= 1.3)} |"
        )
    return lines


def _hanging(result: dict[str, Any]) -> list[str]:
    hang = result["hanging"]
    healthy = hang["healthy"]["p99_ms"]
    after = hang["after_open"]["p99_ms"] if hang["after_open"]["count"] else float("inf")
    return [
        "",
        f"Scenario 3: primary sandbox hanging (`tok_timeout`, its timeout {hang['primary_timeout_ms']} ms, "
        f"failover_on_unknown on), backup healthy, constant {hang['rate']:.0f} req/s, each phase on a fresh server. "
        f"Breaker opened {hang['breaker_opened_after_s']} s in; {hang['backup_answers']} answers came from the "
        f"backup; statuses {hang['hanging_statuses']}.",
        "",
        "| phase | requests | p50 | p99 | goal |",
        "|---|---|---|---|---|",
        f"| healthy (both gateways up) | {hang['healthy']['count']} | {hang['healthy']['p50_ms']:.1f} ms | "
        f"{healthy:.1f} ms | |",
        f"| hanging, before the breaker opens | {hang['before_open']['count']} | "
        f"{hang['before_open']['p50_ms']:.1f} ms | {hang['before_open']['p99_ms']:.1f} ms | |",
        f"| hanging, after it opened | {hang['after_open']['count']} | {hang['after_open']['p50_ms']:.1f} ms | "
        f"{after:.1f} ms | <= 2x healthy: {_ok(after <= 2 * healthy)} |",
    ]


def render(result: dict[str, Any]) -> str:
    machine = result["machine"]
    limiter = "wired" if result.get("ratelimit_wired") else "**not wired yet** (no RateLimit header)"
    lines = [
        f"Last run: `{result['command'].strip()}` at `{result['git']}`"
        + (f" ({result['note']})" if result.get("note") else "")
        + ".",
        "",
        f"Machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, Python "
        f"{machine['python']}; load average {result['load_before']} before, {result['load_after']} after "
        f"(shared with other engineers' test runs). Server: `payorch serve` with {result['workers']} worker(s); "
        f"rate limiter on Redis {limiter}. "
        f"Runs of {result['duration_s']:g} s; whole run {result['elapsed_s']} s.",
        "",
    ]
    if "charges" in result:
        lines += _charges(result)
    if "reads_small" in result and "reads_large" in result:
        lines += _reads(result)
    if "hanging" in result:
        lines += _hanging(result)
    return "\n".join(lines)
