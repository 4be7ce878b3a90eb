"""Shipped and failed audit events per sink are counted on /metrics, and the lag gauge follows."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url
from tests.conftest import _admin, _server_url, make_settings, run_in_thread
from tests.factories import charge_body, create_merchant, post_charge

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.storage.bootstrap import run_migrations


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """The audit chain is global to a database: this test ships from one of its own."""
    server = _server_url()
    name = f"payorch_auditm_{secrets.token_hex(4)}"
    run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    run_migrations(url, partitions=2)
    yield url
    run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def app(own_database: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, Path]]:
    sink_dir = tmp_path / "audit"
    settings = make_settings(own_database, audit={"local": {"directory": str(sink_dir)}})
    runtime = await Runtime.build(settings, own_database)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
        yield client, runtime, sink_dir
    await runtime.aclose()


def _metric(body: str, name: str, sink: str) -> float:
    values = [
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and sample.labels.get("sink") == sink
    ]
    return sum(values)


async def test_shipped_and_failed_events_are_counted(app: tuple[httpx.AsyncClient, Runtime, Path]) -> None:
    client, runtime, sink_dir = app
    assert runtime.audit_shipper is not None
    merchant = await create_merchant(runtime)
    for _ in range(2):
        assert (await post_charge(client, merchant, charge_body())).status_code == 201

    report = await runtime.audit_shipper.run_once(force=True)
    assert report.lock_acquired
    shipped_lines = sum(len(f.read_text().splitlines()) for f in sink_dir.rglob("*") if f.is_file())
    assert shipped_lines >= 8  # created, attempt sent, attempt outcome, succeeded: per charge
    body = (await client.get("/metrics")).text
    assert _metric(body, "payorch_audit_shipped_events_total", "local") == shipped_lines
    assert _metric(body, "payorch_audit_failed_events_total", "local") == 0

    # The sink's directory turns into a file: the next batch cannot be written and is counted.
    shutil.rmtree(sink_dir)
    sink_dir.write_text("not a directory")
    assert (await post_charge(client, merchant, charge_body())).status_code == 201
    await runtime.audit_shipper.run_once(force=True)
    body = (await client.get("/metrics")).text
    assert _metric(body, "payorch_audit_failed_events_total", "local") >= 4
    assert _metric(body, "payorch_audit_shipped_events_total", "local") == shipped_lines
