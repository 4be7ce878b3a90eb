"""`payorch serve` as a subprocess on the test database, for tests that need the real server: raw
sockets, slow clients, the process's own stderr."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_ready(served: Served, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise AssertionError(f"payorch serve exited with {served.process.returncode}:\n{served.log()}")
        try:
            if httpx.get(f"{served.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"payorch serve never answered:\n{served.log()}")


def environment(database_url: str, home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """What a payorch subprocess on the test database gets: this checkout's sources, ``env`` on top."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
        "PAYORCH_ENVIRONMENT": "development",
        "PAYORCH_DATABASE_URL": database_url,
        **(env or {}),
    }


@contextmanager
def serve(
    database_url: str, tmp_path: Path, env: dict[str, str] | None = None, *, port: int | None = None
) -> Iterator[Served]:
    """Serve the app on ``database_url`` with extra ``PAYORCH_*`` variables (on ``port``, else a free
    one); stop it on exit."""
    payorch = Path(sys.executable).with_name("payorch")
    port = port or free_port()
    defaults = {"PAYORCH_RUN_BACKGROUND_IN_API": "false", "PAYORCH_API__API_KEY_CACHE_SECONDS": "0"}
    variables = environment(database_url, tmp_path, {**defaults, **(env or {})})
    log_path = tmp_path / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(payorch), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=variables,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", port, log_path, process)
    try:
        _wait_ready(served, timeout=60)
        yield served
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_until_closed(sock: socket.socket, deadline: float) -> tuple[bytes, bool]:
    """Everything the server sends until it closes the connection; (data, closed before deadline)."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False
