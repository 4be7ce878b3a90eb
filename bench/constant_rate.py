"""A constant-rate (open-loop) HTTP/1.1 load generator, in the manner of wrk2.

Debian ships ``wrk`` but not ``wrk2``; wrk is closed-loop (a slow answer delays the next request),
so it cannot say what latency a given *rate* gets. This sends request ``i`` at ``start + i / rate``
whatever happened before, over up to ``connections`` keep-alive connections, and measures each
latency from the moment the request was *due*, not when a connection became free: queueing behind
a slow server counts (no coordinated omission). Run it pinned to a core of its own
(``taskset -c N``) so it does not compete with the server it measures.

    python bench/constant_rate.py --url http://127.0.0.1:18080/v1/charges --rate 150 --duration 10 \
        --header 'Authorization: Bearer sk_test_...' --body '{"amount": 100, ...}' --unique-idempotency-key

Prints one JSON object: sent, completed, errors, status counts, achieved rate, latency percentiles
(ms) and, with ``--records``, every request as ``[due offset s, latency ms, status, gateway]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import secrets
import string
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GATEWAY = re.compile(rb'"gateway":"([a-z0-9_]+)"')


@dataclass
class Result:
    records: list[tuple[float, float, int, str | None]] = field(default_factory=list)
    errors: int = 0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def summary(latencies: list[float]) -> dict[str, float]:
    values = sorted(latencies)
    return {
        "p50_ms": round(percentile(values, 0.50), 2),
        "p90_ms": round(percentile(values, 0.90), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "max_ms": round(values[-1], 2) if values else float("nan"),
        "count": len(values),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("constant_rate only sends traffic to this machine")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    method = args.method or ("POST" if args.body is not None else "GET")
    body = (args.body or "").encode()
    fixed = [f"{h}\r\n" for h in args.header]
    # Letters only around the counter: a run of 13+ digits could read as a card number and be refused.
    nonce = "".join(secrets.choice(string.ascii_letters) for _ in range(8))

    def request_bytes(index: int) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n", f"Host: {host}:{port}\r\n", *fixed]
        if args.unique_idempotency_key:
            lines.append(f"Idempotency-Key: cr{nonce}x{index}\r\n")
        if body:
            lines.append("Content-Type: application/json\r\n")
            lines.append(f"Content-Length: {len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode() + body

    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = 0
    result = Result()
    total = int(args.rate * args.duration)
    start = time.perf_counter() + 0.05

    async def one(index: int, due: float) -> None:
        nonlocal opened
        connection: Connection | None = None
        try:
            if idle.empty() and opened < args.connections:
                opened += 1
                reader, writer = await asyncio.open_connection(host, port)
                connection = Connection(reader, writer)
            else:
                connection = await idle.get()
            async with asyncio.timeout(args.timeout):
                status, answer = await connection.exchange(request_bytes(index))
            latency = (time.perf_counter() - due) * 1000
            match = GATEWAY.search(answer)
            result.records.append((due - start, latency, status, match.group(1).decode() if match else None))
            idle.put_nowait(connection)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            result.errors += 1
            if connection is not None:
                connection.close()
                opened -= 1

    tasks: set[asyncio.Task[None]] = set()
    for index in range(total):
        due = start + index / args.rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(index, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=args.timeout + 1)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait().close()
    statuses: dict[str, int] = {}
    for record in result.records:
        statuses[str(record[2])] = statuses.get(str(record[2]), 0) + 1
    output: dict[str, object] = {
        "rate": args.rate,
        "duration_s": args.duration,
        "sent": total,
        "completed": len(result.records),
        "errors": result.errors,
        "statuses": statuses,
        "achieved_rps": round(len(result.records) / elapsed, 1),
        "latency": summary([r[1] for r in result.records]),
    }
    if args.records:
        output["records"] = [[round(r[0], 4), round(r[1], 2), r[2], r[3]] for r in result.records]
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--method")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body")
    parser.add_argument("--unique-idempotency-key", action="store_true")
    parser.add_argument("--records", action="store_true")
    args = parser.parse_args()
    if args.rate <= 0 or args.duration <= 0 or args.rate * args.duration > 1_000_000:
        parser.error("rate and duration must be positive, and at most 1,000,000 requests in all")
    runner = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    json.dump(runner(run(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
