"""SIGTERM while a slow charge is in flight: the served process finishes it before exiting."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.factories import charge_body, create_merchant
from tests.integration.redis_cluster import free_port

from payorch.runtime import Runtime
from payorch.storage import charges as charges_repo

pytestmark = pytest.mark.e2e


async def _wait_for(condition, what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(0.05)


async def test_sigterm_lets_an_in_flight_charge_finish(database_url: str, runtime: Runtime, tmp_path: Path) -> None:
    merchant = await create_merchant(runtime)
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "PAYORCH_ENVIRONMENT": "development",
        "PAYORCH_DATABASE_URL": database_url,
        "PAYORCH_LOG_JSON": "true",
        "PAYORCH_RUN_BACKGROUND_IN_API": "false",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("payorch")), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def ready() -> bool:
                assert process.poll() is None, log_path.read_text()
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await _wait_for(ready, "payorch serve to be ready")
            # tok_timeout: the sandbox hangs ~2.5 s before it answers.
            in_flight = asyncio.create_task(
                client.post("/v1/charges", json=charge_body("tok_timeout"), headers=merchant.headers)
            )

            async def charge_started() -> bool:
                async with runtime.db.connection() as connection:
                    charges, _ = await charges_repo.list_charges(
                        connection, merchant.id, livemode=False, limit=1, starting_after=None, ending_before=None
                    )
                return bool(charges)

            await _wait_for(charge_started, "the charge to reach the gateway")
            process.send_signal(signal.SIGTERM)
            response = await in_flight
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)

    assert response.status_code in (201, 202), response.text
    charge = response.json()
    assert charge["id"].startswith("ch_")
    assert charge["status"] in ("succeeded", "processing")
    output = log_path.read_text()
    assert code in (0, -signal.SIGTERM), output
    assert "Application shutdown complete." in output
    # The charge's answer was logged before the process shut down.
    assert output.index(charge["id"]) < output.index("Application shutdown complete.")
