"""Crash recovery: `payorch serve` is SIGKILLed after the gateway charged the card and before the
result was written; after a restart the reconciler (`payorch reconcile`) resolves the orphaned
attempt to the gateway's truth, and the merchant's retry replays it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import make_settings
from tests.factories import create_merchant
from tests.fakes.stripe_server import FakeRequest, FakeResponse, Fault, StripeFake

from payorch.runtime import Runtime
from payorch.storage import charges as repo
from payorch.storage.bootstrap import run_migrations

pytestmark = pytest.mark.e2e

PAYORCH = Path(sys.executable).with_name("payorch")


class ChargeThenHoldStripeFake(StripeFake):
    """Stripe that, once armed, executes the next PaymentIntent create and then holds the answer
    until ``release()``: the card is charged, and the caller has not heard of it."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.charged_and_holding = False

    async def _execute(self, request: FakeRequest, fault: Fault | None) -> tuple[FakeResponse, FakeResponse | None]:
        result, answer = await super()._execute(request, fault)
        if self.armed and request.method == "POST" and request.path == "/v1/payment_intents":
            self.armed = False
            release = self._release
            with self._cond:
                self.charged_and_holding = True
                self._cond.notify_all()
            assert release is not None
            await release.wait()
        return result, answer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stripe() -> Iterator[ChargeThenHoldStripeFake]:
    fake = ChargeThenHoldStripeFake()
    fake.start()
    yield fake
    fake.release()
    fake.stop()


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """A database of its own, migrated for this test with the real migrations."""
    server = make_url(database_url)
    name = f"payorch_crash_{secrets.token_hex(4)}"
    admin_dsn = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    connection = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    url = server.set(database=name).render_as_string(hide_password=False)
    await asyncio.to_thread(run_migrations, url, partitions=4)
    yield url
    connection = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def _environment(database_url: str, stripe_url: str, home: Path) -> dict[str, str]:
    gateway = {
        "name": "stripe",
        "kind": "stripe",
        "base_url": stripe_url,
        "api_key": "sk_test_fake",
        "timeout_ms": 30000,
    }
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PAYORCH_ENVIRONMENT": "development",
        "PAYORCH_DATABASE_URL": database_url,
        "PAYORCH_GATEWAYS": json.dumps([gateway]),
        "PAYORCH_RUN_BACKGROUND_IN_API": "false",
        "PAYORCH_API__API_KEY_CACHE_SECONDS": "0",
        # The stale window must outlast the request deadline (settings refuse otherwise): keep both short.
        "PAYORCH_ROUTING__DEADLINE_MS": "10000",
        "PAYORCH_IDEMPOTENCY__STALE_AFTER_SECONDS": "16",
        "PAYORCH_RECONCILER__FIRST_CHECK_SECONDS": "0",
    }


@contextlib.contextmanager
def _served(env: dict[str, str], home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    log_path = home / f"serve-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PAYORCH), "serve", "--port", str(port)], cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"payorch serve exited with {process.returncode}: {log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"payorch serve never answered: {log_path.read_text()}")
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _reconcile(env: dict[str, str], home: Path) -> str:
    done = await asyncio.to_thread(
        subprocess.run, [str(PAYORCH), "reconcile"], cwd=home, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.timeout(180)
async def test_a_charge_orphaned_by_sigkill_takes_the_gateways_truth(
    fresh_database: str, stripe: ChargeThenHoldStripeFake, tmp_path: Path
) -> None:
    runtime = await Runtime.build(make_settings(fresh_database), fresh_database)
    try:
        merchant = await create_merchant(runtime)
    finally:
        await runtime.aclose()
    env = _environment(fresh_database, stripe.url, tmp_path)
    headers = {**merchant.headers, "Idempotency-Key": "order-1234"}
    body = {"amount": 4200, "currency": "usd", "payment_method": {"tokens": {"stripe": "tok_visa"}}}

    with _served(env, tmp_path) as (url, process):
        stripe.armed = True
        async with httpx.AsyncClient(timeout=60) as client:
            posting = asyncio.ensure_future(client.post(f"{url}/v1/charges", json=body, headers=headers))
            await stripe.until(lambda: stripe.charged_and_holding, timeout=30)
            # The gateway has charged the card; payorch is still waiting for the answer.
            [payment] = stripe.ledger
            assert (payment.status, payment.amount) == ("succeeded", 4200)
            attempt_id = payment.metadata["attempt_id"]
            charge_id = payment.metadata["charge_id"]
            runtime = await Runtime.build(make_settings(fresh_database), fresh_database)
            try:
                async with runtime.db.connection() as connection:
                    charge = await repo.get_charge(connection, merchant.id, charge_id)
                    attempts = await repo.list_attempts(connection, merchant.id, charge_id)
                assert charge is not None
                assert charge.status == "pending"
                assert [(a.id, a.status) for a in attempts] == [(attempt_id, "pending")]

                process.send_signal(signal.SIGKILL)
                assert await asyncio.to_thread(process.wait, 20) == -signal.SIGKILL
                with pytest.raises(httpx.TransportError):
                    await posting
                stripe.release()  # Stripe finishes its side; nobody is listening any more

                # Restart, and let the reconciler find the orphan once it is stale.
                with _served(env, tmp_path) as (url, _):

                    async def resolved() -> bool:
                        await _reconcile(env, tmp_path)
                        fetched = await client.get(f"{url}/v1/charges/{charge_id}", headers=merchant.headers)
                        return bool(fetched.json()["status"] == "succeeded")

                    deadline = time.monotonic() + 60
                    while not await resolved():
                        assert time.monotonic() < deadline, "the orphaned attempt was never resolved"
                        await asyncio.sleep(0.5)

                    fetched = (await client.get(f"{url}/v1/charges/{charge_id}", headers=merchant.headers)).json()
                    # The merchant's retry with the same key replays the outcome; no second charge.
                    retried = await client.post(f"{url}/v1/charges", json=body, headers=headers)
                async with runtime.db.connection() as connection:
                    attempts = await repo.list_attempts(connection, merchant.id, charge_id)
            finally:
                await runtime.aclose()

    assert (fetched["gateway"], fetched["gateway_reference"], fetched["amount_captured"]) == (
        "stripe",
        payment.reference,
        4200,
    )
    assert [(a.status, a.gateway_reference) for a in attempts] == [("approved", payment.reference)]
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == charge_id
    assert retried.json()["status"] == "succeeded"
    assert len(stripe.ledger) == 1  # charged exactly once
