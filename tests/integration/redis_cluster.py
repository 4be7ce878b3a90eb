"""Throwaway Redis servers for tests: a single server the test owns (so it may stop it) and a
3-master Redis Cluster, all on loopback, on free ports, in a temporary directory.

Never touches the shared server at 127.0.0.1:6379.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_DEADLINE_S = 15.0


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port; for a cluster node also its bus port (port + 10000) must be free."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not cluster_bus or (port + 10000 <= 65535 and _bindable(port + 10000)):
            return port


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result.stdout.strip()


def wait_until(condition, what: str, deadline_s: float = STARTUP_DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.02)


class RedisServer:
    """One ``redis-server`` on ``port``; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.cluster = "--cluster-enabled" in extra
        self.port = free_port(self.cluster)
        self.directory = directory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.started_once = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start on ``self.port``; the first start moves to another free port if it lost a race for it."""
        for _ in range(5):
            try:
                self._start_once()
            except RuntimeError:
                if self.started_once:
                    raise
                self.port = free_port(self.cluster)
            else:
                self.started_once = True
                return
        raise RuntimeError("could not start redis-server on any free port")

    def _start_once(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--logfile", str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}")
        return _cli(self.port, "ping") == "PONG"

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="payorch-redis-"))
    server = RedisServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


class RedisClusterHarness:
    def __init__(self, servers: list[RedisServer]) -> None:
        self.servers = servers

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]


def _cluster_ok(port: int, masters: int) -> bool:
    info = _cli(port, "cluster", "info")
    return "cluster_state:ok" in info and f"cluster_known_nodes:{masters}" in info


@contextmanager
def redis_cluster(masters: int = 3) -> Iterator[RedisClusterHarness]:
    """A ``masters``-node Redis Cluster with no replicas, every slot assigned, state ok on every node."""
    directory = Path(tempfile.mkdtemp(prefix="payorch-redis-cluster-"))
    servers: list[RedisServer] = []
    try:
        for n in range(masters):
            server = RedisServer(
                directory / f"node{n}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
            server.start()
            servers.append(server)
        create = subprocess.run(
            [
                "redis-cli", "--cluster", "create",
                *(f"127.0.0.1:{server.port}" for server in servers),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout}\n{create.stderr}")
        for server in servers:
            wait_until(lambda port=server.port: _cluster_ok(port, masters), f"cluster state ok on {server.port}")
        yield RedisClusterHarness(servers)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
