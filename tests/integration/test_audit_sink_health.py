"""A sink misconfigured at start (a missing bucket, Object Lock off, a refused credential) no longer
stops the worker: its other jobs run, the sink is reported unhealthy (``payorch_audit_sink_up``, the
worker's ``/healthz``) and retried with backoff, and its events wait in the chain until it recovers.

S3 is moto's server mode (a process with IAM enforced for the refused credential); CloudTrail Lake is
the cloudtrail-data fake, which checks every SigV4 signature. A database of its own per test, so the
chain holds only that test's events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import scratch_database
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake
from tests.integration.audit_sinks_support import (
    CHANNEL,
    admin_s3,
    aws_credentials,
    caught_up,
    chain_state,
    cloudtrail_fake,
    gauges,
    grant_s3,
    iam_user_without_permissions,
    moto_s3,
    moto_s3_with_iam,
    s3_client,
    sink_settings,
    wait_for,
)

from payorch.api.ops import ops_app
from payorch.app import create_app
from payorch.audit.verify import verify_configured
from payorch.runtime import Runtime
from payorch.settings import Settings

JOBS = {"reconciler", "idempotency-purge", "webhook-dispatcher", "audit-shipper"}


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_database("payorch_sinkhealth", partitions=2) as url:
        yield url


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def cloudtrail() -> Iterator[CloudTrailDataFake]:
    with cloudtrail_fake() as fake:
        yield fake


class Worker:
    """A Runtime with its background jobs started (as ``payorch worker`` runs them), the app on it,
    and the worker's operations endpoints."""

    def __init__(self, runtime: Runtime, client: httpx.AsyncClient, ops: httpx.AsyncClient) -> None:
        self.runtime, self.client, self.ops = runtime, client, ops

    async def charges(self, merchant: MerchantFixture, count: int) -> None:
        for amount in range(100, 100 + count):
            assert (await post_charge(self.client, merchant, charge_body(amount=amount))).status_code == 201

    def sink_state(self, sink: str, state: str, error: str = "") -> Callable[[], Any]:
        async def condition() -> bool:
            health = self.runtime.audit_sink_health()
            return health is not None and health[sink].state == state and error in (health[sink].error or "")

        return condition


@asynccontextmanager
async def worker(
    settings: Settings, database_url: str, credentials: dict[str, str] | None = None
) -> AsyncIterator[Worker]:
    with aws_credentials(credentials):
        runtime = await Runtime.build(settings, database_url)
        runtime.start_background()
        app = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
        ops = httpx.ASGITransport(app=ops_app(runtime, jobs=runtime.background_states))
        try:
            async with (
                httpx.AsyncClient(transport=app, base_url="http://payorch.test", timeout=60) as client,
                httpx.AsyncClient(transport=ops, base_url="http://ops.test") as ops_client,
            ):
                yield Worker(runtime, client, ops_client)
        finally:
            await runtime.aclose()


async def assert_degraded_but_running(w: Worker, sink: str) -> None:
    answer = await w.ops.get("/healthz")
    assert answer.status_code == 200, "a liveness probe must not restart the other jobs away"
    body = answer.json()
    assert body["status"] == "degraded"
    assert JOBS <= set(body["jobs"])
    assert set(body["jobs"].values()) == {"running"}
    assert body["audit_sinks"][sink]["healthy"] is False
    assert body["audit_sinks"][sink]["state"] == "misconfigured"
    assert body["audit_sinks"]["local"]["healthy"] is True
    assert (await gauges(w.runtime, "payorch_audit_sink_up"))[sink] == 0


async def test_a_missing_bucket_keeps_the_worker_running_and_ships_once_created(
    own_database: str, s3_url: str, tmp_path: Path
) -> None:
    bucket = f"audit-missing-{uuid.uuid4().hex[:8]}"
    settings = sink_settings(own_database, tmp_path, s3={"bucket": bucket, "endpoint_url": s3_url})
    async with worker(settings, own_database) as w:
        merchant = await create_merchant(w.runtime)
        await w.charges(merchant, 5)
        await wait_for(w.sink_state("s3", "misconfigured", "NoSuchBucket"), what="s3 reported misconfigured")
        await wait_for(caught_up(w.runtime, "local"), what="the local sink shipping meanwhile")
        assert (await chain_state(w.runtime))[2]["s3"] == 0
        await assert_degraded_but_running(w, "s3")

        # The reconciler is among the jobs that kept running: it resolves a charge left processing.
        late = await post_charge(w.client, merchant, charge_body("tok_timeout"))
        assert late.status_code == 202

        async def resolved() -> bool:
            fetched = await w.client.get(f"/v1/charges/{late.json()['id']}", headers=merchant.headers)
            return bool(fetched.json()["status"] == "succeeded")

        await wait_for(resolved, what="the reconciler resolving the processing charge")

        s3_client(s3_url).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        await wait_for(caught_up(w.runtime, "local", "s3"), what="s3 catching up once the bucket exists")
        await wait_for(w.sink_state("s3", "up"), what="s3 reported up")
        assert (await w.ops.get("/healthz")).json()["status"] == "ok"
        assert (await gauges(w.runtime, "payorch_audit_sink_up"))["s3"] == 1
        _, tip, _ = await chain_state(w.runtime)

    with aws_credentials():
        results = await verify_configured(settings.audit, data_dir=settings.data_dir, database_url=own_database)
    assert results.ok, results.lines
    assert {name: report.last_seq for name, report in results.reports.items()} == {"local": tip, "s3": tip}


async def test_a_bucket_without_object_lock_is_reported_and_the_rest_ships(
    own_database: str, s3_url: str, tmp_path: Path
) -> None:
    plain = f"audit-plain-{uuid.uuid4().hex[:8]}"
    s3_client(s3_url).create_bucket(Bucket=plain)
    settings = sink_settings(own_database, tmp_path, s3={"bucket": plain, "endpoint_url": s3_url})
    async with worker(settings, own_database) as w:
        await w.charges(await create_merchant(w.runtime), 3)
        await wait_for(w.sink_state("s3", "misconfigured", "Object Lock"), what="s3 reported misconfigured")
        await wait_for(caught_up(w.runtime, "local"), what="the local sink shipping meanwhile")
        await assert_degraded_but_running(w, "s3")
        assert "Key" not in str(s3_client(s3_url).list_objects_v2(Bucket=plain).get("Contents", []))


async def test_a_refused_s3_credential_keeps_the_worker_running_and_ships_once_granted(
    own_database: str, tmp_path: Path
) -> None:
    with moto_s3_with_iam() as (url, admin):
        bucket = f"audit-iam-{uuid.uuid4().hex[:8]}"
        admin_s3(url, admin).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        user = f"payorch-worker-{uuid.uuid4().hex[:6]}"
        refused = iam_user_without_permissions(url, admin, user)
        settings = sink_settings(own_database, tmp_path, s3={"bucket": bucket, "endpoint_url": url})
        async with worker(settings, own_database, refused) as w:
            await w.charges(await create_merchant(w.runtime), 4)
            await wait_for(w.sink_state("s3", "misconfigured", "AccessDenied"), what="s3 refusing the credential")
            await wait_for(caught_up(w.runtime, "local"), what="the local sink shipping meanwhile")
            await assert_degraded_but_running(w, "s3")

            grant_s3(url, admin, user)
            await wait_for(caught_up(w.runtime, "local", "s3"), what="s3 catching up once the key may write")
            await wait_for(w.sink_state("s3", "up"), what="s3 reported up")
        listed = admin_s3(url, admin).list_objects_v2(Bucket=bucket)["Contents"]
        assert listed, "the waiting events reached the bucket"


async def test_a_wrong_s3_secret_is_reported_as_misconfigured(own_database: str, tmp_path: Path) -> None:
    with moto_s3_with_iam() as (url, admin):
        bucket = f"audit-sig-{uuid.uuid4().hex[:8]}"
        admin_s3(url, admin).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        wrong = {**admin, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        settings = sink_settings(own_database, tmp_path, s3={"bucket": bucket, "endpoint_url": url})
        async with worker(settings, own_database, wrong) as w:
            await w.charges(await create_merchant(w.runtime), 2)
            await wait_for(w.sink_state("s3", "misconfigured", "SignatureDoesNotMatch"), what="s3 refusing the secret")
            await wait_for(caught_up(w.runtime, "local"), what="the local sink shipping meanwhile")
            await assert_degraded_but_running(w, "s3")


async def test_a_refused_cloudtrail_credential_is_retried_and_recovers(
    own_database: str, cloudtrail: CloudTrailDataFake, tmp_path: Path
) -> None:
    settings = sink_settings(own_database, tmp_path, cloudtrail={"endpoint_url": cloudtrail.url})
    cloudtrail.secret_key = "rotated-elsewhere"  # every signature payorch makes is refused now
    try:
        async with worker(settings, own_database) as w:
            await w.charges(await create_merchant(w.runtime), 3)
            await wait_for(
                w.sink_state("cloudtrail", "misconfigured", "InvalidSignatureException"), what="cloudtrail refusing"
            )
            await wait_for(caught_up(w.runtime, "local"), what="the local sink shipping meanwhile")
            await assert_degraded_but_running(w, "cloudtrail")
            cloudtrail.secret_key = "testing"
            await wait_for(caught_up(w.runtime, "local", "cloudtrail"), what="cloudtrail catching up")
            await wait_for(w.sink_state("cloudtrail", "up"), what="cloudtrail reported up")
            _, tip, _ = await chain_state(w.runtime)
    finally:
        cloudtrail.secret_key = "testing"
    seqs = sorted(e.event_data["additionalEventData"]["chain"]["seq"] for e in cloudtrail.events(CHANNEL))
    assert seqs == list(range(1, tip + 1))
