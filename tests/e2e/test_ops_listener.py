"""The operations listener: ``/metrics``, ``/healthz`` and ``/readyz`` on a port of their own, for
the API (where ``/metrics`` then leaves the public port) and for the worker (which serves no API)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.integration.redis_cluster import wait_until
from tests.integration.served_payorch import environment, free_port, serve

pytestmark = pytest.mark.e2e

PAYORCH = str(Path(sys.executable).with_name("payorch"))


def test_the_api_serves_metrics_on_its_own_port_only(database_url: str, tmp_path: Path) -> None:
    ops_port = free_port()
    with serve(database_url, tmp_path, {"PAYORCH_METRICS__PORT": str(ops_port)}) as served:
        ops = f"http://127.0.0.1:{ops_port}"
        assert httpx.get(f"{served.url}/metrics", timeout=5).status_code == 404
        assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200  # the image's probe
        scraped = httpx.get(f"{ops}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "payorch_http_requests_total" in scraped.text
        assert httpx.get(f"{ops}/healthz", timeout=5).json() == {"status": "ok"}
        assert httpx.get(f"{ops}/readyz", timeout=5).json()["checks"]["database"] == "ok"
        assert "/metrics" not in httpx.get(f"{served.url}/openapi.json", timeout=5).json()["paths"]


def test_the_worker_serves_health_and_metrics_on_its_port(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = environment(
        database_url,
        tmp_path,
        {
            "PAYORCH_DATA_DIR": str(tmp_path),
            "PAYORCH_WEBHOOKS__SECRET_KEY": Fernet.generate_key().decode(),
            "PAYORCH_METRICS__PORT": str(port),
        },
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([PAYORCH, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert worker.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, "the worker's /healthz", deadline_s=90)
        health = httpx.get(f"{url}/healthz", timeout=5).json()
        assert health["status"] == "ok"
        assert {"reconciler", "webhook-dispatcher"} <= set(health["jobs"])
        assert set(health["jobs"].values()) == {"running"}
        scraped = httpx.get(f"{url}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "payorch_reconciler_backlog" in scraped.text
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)
    assert code == 0, log.read_text()
