"""Plumbing for ``bench/charges_bench.py``: the machine, a fresh database, served processes, wrk and the
constant-rate generator, the results section of docs/benchmarks.md. Traffic goes to 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    """nproc, memory, CPU model and the load average now (the machine is shared: say how busy it was)."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu_model": model,
        "python": sys.version.split()[0],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ensure_wrk() -> str:
    """wrk from Debian (closed-loop throughput). Installed with apt-get when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk is missing: apt-get install -y wrk")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, stdout=subprocess.DEVNULL, timeout=300)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("bench needs wrk: `sudo apt-get install -y wrk` (Debian/Ubuntu), then run `make bench` again")


def load_cpu() -> str:
    """The CPU the load generators are pinned to: the last one (the server is not pinned)."""
    return str((os.cpu_count() or 1) - 1)


# --- database -----------------------------------------------------------------------------------


def database_urls(admin: str, name: str) -> tuple[str, str]:
    """(asyncpg DSN, SQLAlchemy URL) of database ``name`` on the server of ``admin``."""
    base = admin.rsplit("/", 1)[0]
    dsn = f"{base}/{name}"
    return dsn, dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


async def fresh_database(admin: str, name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise SystemExit(f"bad database name {name!r}")
    connection = await asyncpg.connect(admin, timeout=10)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()


async def sql(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement, timeout=600)
    finally:
        await connection.close()


async def fetch(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await connection.fetch(query, *args, timeout=60))
    finally:
        await connection.close()


async def explain_ms(dsn: str, query: str, *args: Any, repeat: int = 30) -> float:
    """Median planning + execution time (ms) Postgres reports for ``query``: the database's own cost,
    untouched by HTTP, Python or the load on the machine's other processes (mostly)."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        times = []
        for _ in range(repeat):
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args, timeout=60)
            plan = json.loads(rows[0][0])[0]
            times.append(plan["Planning Time"] + plan["Execution Time"])
        times.sort()
        return round(times[len(times) // 2], 3)
    finally:
        await connection.close()


# --- served processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout: float = 90) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=output, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited at start: see {self.log_path}")
            if http_status(self.port, self.ready_path) == 200:
                log(f"{self.name} up on {self.base} (pid {self.process.pid})")
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{self.name} not ready after {timeout}s: see {self.log_path}")

    def pids(self) -> list[int]:
        """The server process and its children (uvicorn workers), for py-spy."""
        if self.process is None:
            return []
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [self.process.pid, *(int(pid) for pid in children)]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        total = 0.0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def http_status(port: int, path: str) -> int:
    try:
        with socket.create_connection((HOST, port), timeout=2) as connection:
            connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            head = connection.recv(64)
        return int(head[9:12])
    except (OSError, ValueError):
        return 0


# --- load generators ----------------------------------------------------------------------------


def postgres_cpu() -> float:
    """CPU seconds used so far by every process named ``postgres`` on this machine (the server's
    backends do the database's share of the work; a backend that exits meanwhile is not counted)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].partition(") ")
        if name == "postgres":
            fields = rest.split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def wrk(wrk_bin: str, url: str, script: str, args: list[str], *, duration: float, connections: int) -> dict[str, Any]:
    """One closed-loop wrk run (1 thread, pinned to the load CPU). Returns rps and latency in ms."""
    argv = [
        "taskset", "-c", load_cpu(), wrk_bin, "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
        "-s", str(BENCH / "wrk" / script), url, "--", *args,
    ]  # fmt: skip
    run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 60)
    line = next((x for x in run.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk failed: {run.stdout}\n{run.stderr}")
    raw = json.loads(line[len("WRKJSON ") :])
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "requests": raw["requests"],
        "errors": errors,
        "non_2xx": raw["status_errors"],
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
    }


def constant_rate(
    url: str, *, rate: float, duration: float, headers: list[str], body: str | None, unique_key: bool, records: bool
) -> dict[str, Any]:
    """One open-loop run of bench/constant_rate.py, pinned to the load CPU."""
    argv = [
        "taskset", "-c", load_cpu(), sys.executable, str(BENCH / "constant_rate.py"), "--url", url,
        "--rate", f"{rate:.1f}", "--duration", f"{duration:g}", "--connections", "64",
    ]  # fmt: skip
    for header in headers:
        argv += ["--header", header]
    if body is not None:
        argv += ["--body", body]
    if unique_key:
        argv.append("--unique-idempotency-key")
    if records:
        argv.append("--records")
    run = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=duration + 90)
    if run.returncode != 0:
        raise SystemExit(f"constant_rate failed: {run.stderr}")
    result: dict[str, Any] = json.loads(run.stdout)
    return result


async def post_json(port: int, path: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:
        response = await client.post(path, json=body, headers=headers)
        return response.status_code, response.json()


def run_cli(env: dict[str, str], *args: str) -> str:
    run = subprocess.run(
        [str(VENV_BIN / "payorch"), *args], env=env, capture_output=True, text=True, check=False, timeout=300, cwd=ROOT
    )
    if run.returncode != 0:
        raise SystemExit(f"payorch {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run.stdout.strip().splitlines()[-1]


def run_async(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# --- docs/benchmarks.md -------------------------------------------------------------------------

BEGIN = "<!-- charges-bench:begin (written by bench/charges_bench.py) -->"
END = "<!-- charges-bench:end -->"


def update_doc(path: Path, block: str) -> None:
    """Replace only the generated block of this benchmark; other sections belong to others."""
    text = path.read_text() if path.exists() else ""
    generated = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + generated + tail
    else:
        text = text.rstrip() + "\n\n" + generated + "\n"
    path.write_text(text)


def git_head() -> str:
    run = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True, check=False, cwd=ROOT)
    return run.stdout.strip()


def has_header(port: int, path: str, key: str, name: str) -> bool:
    """Whether a GET answer carries header ``name`` (e.g. RateLimit: the limiter is wired)."""
    with socket.create_connection((HOST, port), timeout=5) as connection:
        connection.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = connection.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower().split("\r\n")[1:]
    return any(line.split(":", 1)[0] == name.lower() for line in lines)


def start_profile(server: Server, directory: Path, duration: float) -> subprocess.Popen[bytes]:
    """py-spy (``pip install py-spy`` into the venv; needs root or ptrace rights) on the server's
    processes for ``duration`` seconds: collapsed stacks for bench/profile_top.py, and a flame graph."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = server.pids()[-1]
    argv = [
        str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration", f"{duration:.0f}", "--rate", "200",
        "--format", "raw", "--output", str(directory / f"{server.name}.folded"),
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
