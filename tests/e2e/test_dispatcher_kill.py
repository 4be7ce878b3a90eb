"""`payorch worker` SIGKILLed while the merchant's endpoint holds its delivery: after a restart the
delivery is made again, with the same webhook-id. Then `payorch webhooks redeliver` sends it once more."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.conftest import make_settings
from tests.factories import charge_body, create_merchant, fetch_rows, post_charge
from tests.fakes.merchant_endpoint import MerchantEndpoint, verify

from payorch.app import create_app
from payorch.runtime import Runtime

pytestmark = pytest.mark.e2e

PAYORCH = str(Path(sys.executable).with_name("payorch"))
SECRET_KEY = Fernet.generate_key().decode()
WEBHOOKS = {
    "secret_key": SECRET_KEY,
    "delivery_timeout_seconds": "2",
    "lease_margin_seconds": "1",
    "poll_interval_seconds": "0.2",
    "retry_base_seconds": "0.05",
    "allow_loopback_endpoints": "true",  # the merchant's endpoint runs on this machine
}


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    settings = make_settings(database_url, webhooks=WEBHOOKS)
    runtime = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
            yield runtime, client
    finally:
        await runtime.aclose()


@pytest.fixture
def endpoint() -> Iterator[MerchantEndpoint]:
    with MerchantEndpoint() as server:
        yield server


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(data_dir),
        "PAYORCH_ENVIRONMENT": "development",
        "PAYORCH_DATABASE_URL": database_url,
        "PAYORCH_DATA_DIR": str(data_dir),
        "PAYORCH_RECONCILER__INTERVAL_SECONDS": "30",
    }
    env.update({f"PAYORCH_WEBHOOKS__{name.upper()}": value for name, value in WEBHOOKS.items()})
    return env


def _worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([PAYORCH, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _delivery_when(runtime: Runtime, merchant_id: str, status: str, timeout: float = 30) -> Any:
    """The merchant's one delivery row once it has ``status`` (the worker records after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        (row,) = await fetch_rows(
            runtime.db, "SELECT id, status, attempts FROM webhook_deliveries WHERE merchant_id = $1", merchant_id
        )
        if row["status"] == status or time.monotonic() > deadline:
            assert row["status"] == status
            return row
        await asyncio.sleep(0.05)


async def test_killed_mid_delivery_then_delivered_after_restart(
    database_url: str, api: tuple[Runtime, httpx.AsyncClient], endpoint: MerchantEndpoint, tmp_path: Path
) -> None:
    runtime, client = api
    merchant = await create_merchant(runtime)
    created = await client.post(
        "/v1/webhook_endpoints",
        json={"url": endpoint.url, "enabled_events": ["charge.succeeded"]},
        headers=merchant.headers,
    )
    secret = created.json()["secret"]
    endpoint.hold()
    charge = (await post_charge(client, merchant, charge_body("tok_visa"))).json()
    env, log = _env(database_url, tmp_path), tmp_path / "worker.log"

    first = _worker(env, log)
    try:
        await endpoint.until(lambda: len(endpoint.arrivals) == 1, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    await endpoint.until(lambda: endpoint.open_requests() == 0)  # the endpoint saw the client vanish
    assert endpoint.acknowledged() == []
    endpoint.release()

    second = _worker(env, log)
    try:
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 1, timeout=60)
        held, delivered = endpoint.arrivals
        assert delivered.webhook_id == held.webhook_id
        event = verify(delivered, secret)
        assert event["data"]["object"]["id"] == charge["id"]  # type: ignore[index]

        row = await _delivery_when(runtime, merchant.id, "succeeded")
        assert row["attempts"] == 2

        redeliver = subprocess.run(
            [PAYORCH, "webhooks", "redeliver", row["id"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert redeliver.returncode == 0, redeliver.stderr
        await endpoint.until(lambda: len(endpoint.acknowledged()) == 2, timeout=30)
        assert {a.webhook_id for a in endpoint.arrivals} == {held.webhook_id}

    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            raise
    assert second.returncode == 0, log.read_text()[-3000:]
