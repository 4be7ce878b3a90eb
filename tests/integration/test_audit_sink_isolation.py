"""One hanging sink holds back nobody: a CloudTrail Lake endpoint that accepts the connection and
never answers, while S3 (moto's server mode) and the local directory keep shipping and chaining
goes on. A database of its own, so the chain holds only this module's events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import scratch_database
from tests.factories import charge_body, create_merchant, post_charge
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake
from tests.integration.audit_sinks_support import (
    CHANNEL,
    aws_credentials,
    caught_up,
    chain_state,
    cloudtrail_fake,
    gauges,
    locked_bucket,
    moto_s3,
    sink_settings,
    wait_for,
)

from payorch.api.ops import ops_app
from payorch.app import create_app
from payorch.runtime import Runtime

WAVES = 3
CHARGES_PER_WAVE = 8


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    with scratch_database("payorch_audithang", partitions=2) as url:
        yield url


@pytest.fixture(scope="module")
def cloudtrail() -> Iterator[CloudTrailDataFake]:
    with cloudtrail_fake() as fake:
        yield fake


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture
async def started(
    own_database: str, s3_url: str, cloudtrail: CloudTrailDataFake, tmp_path: Path
) -> AsyncIterator[Runtime]:
    settings = sink_settings(
        own_database,
        tmp_path,
        s3={"bucket": locked_bucket(s3_url), "endpoint_url": s3_url},
        cloudtrail={"endpoint_url": cloudtrail.url},
    )
    with aws_credentials():
        runtime = await Runtime.build(settings, own_database)
        runtime.start_background()
        try:
            yield runtime
        finally:
            cloudtrail.hang = False
            await runtime.aclose()


async def test_a_hanging_cloudtrail_holds_back_neither_s3_nor_local_nor_chaining(
    started: Runtime, cloudtrail: CloudTrailDataFake
) -> None:
    transport = httpx.ASGITransport(app=create_app(started.settings, runtime=started))
    ops = httpx.ASGITransport(app=ops_app(started, jobs=started.background_states))
    merchant = await create_merchant(started)
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client,
        httpx.AsyncClient(transport=ops, base_url="http://ops.test") as ops_client,
    ):
        assert (await post_charge(client, merchant, charge_body())).status_code == 201
        await wait_for(caught_up(started, "local", "s3", "cloudtrail"), what="every sink caught up before the hang")
        _, tip_before, _ = await chain_state(started)

        cloudtrail.hang = True
        for wave in range(WAVES):
            statuses = await asyncio.gather(
                *(post_charge(client, merchant, charge_body(amount=100 + i)) for i in range(CHARGES_PER_WAVE))
            )
            assert [response.status_code for response in statuses] == [201] * CHARGES_PER_WAVE
            # Chained, and on S3 and the local directory, while CloudTrail's calls hang.
            await wait_for(caught_up(started, "local", "s3"), what="S3 and local caught up during the hang")
            _, tip, cursors = await chain_state(started)
            assert tip > tip_before
            assert cursors["cloudtrail"] == tip_before
            # The next wave only once CloudTrail has failed again: shipping goes on across its
            # timeouts and backoffs, not only before the first one.
            await wait_for(_failed_times(started, wave + 1), what=f"CloudTrail's failure {wave + 1}")

        assert cloudtrail.hung_calls >= 1, "CloudTrail was called and held"
        lag = await gauges(started, "payorch_audit_outbox_lag_seconds")
        assert lag["s3"] == 0
        assert lag["local"] == 0
        assert lag["cloudtrail"] > 0
        health = started.audit_sink_health()
        assert health is not None
        assert health["cloudtrail"].state == "down"
        assert health["s3"].state == health["local"].state == "up"
        answer = await ops_client.get("/healthz")
        assert answer.status_code == 200
        assert answer.json()["status"] == "degraded"
        assert answer.json()["audit_sinks"]["cloudtrail"]["healthy"] is False
        assert answer.json()["audit_sinks"]["s3"]["healthy"] is True
        assert set(answer.json()["jobs"].values()) == {"running"}
        up = await gauges(started, "payorch_audit_sink_up")
        assert (up["cloudtrail"], up["s3"], up["local"]) == (0, 1, 1)

        # The endpoint answers again: CloudTrail catches up on its own, each event stored once.
        cloudtrail.hang = False
        await wait_for(caught_up(started, "local", "s3", "cloudtrail"), what="CloudTrail caught up")
        _, tip, _ = await chain_state(started)
        stored = [e.event_data["additionalEventData"]["chain"]["seq"] for e in cloudtrail.events(CHANNEL)]
        assert sorted(stored) == list(range(1, tip + 1))
        assert set(cloudtrail.arrivals.values()) == {1}
        await wait_for(_healthy(ops_client), what="the worker's health back to ok")
        assert (await gauges(started, "payorch_audit_sink_up"))["cloudtrail"] == 1


def _failed_times(runtime: Runtime, count: int):
    async def condition() -> bool:
        health = runtime.audit_sink_health()
        return health is not None and health["cloudtrail"].consecutive_failures >= count

    return condition


def _healthy(ops_client: httpx.AsyncClient):
    async def condition() -> bool:
        return bool((await ops_client.get("/healthz")).json()["status"] == "ok")

    return condition
