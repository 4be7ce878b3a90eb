"""``payorch worker`` started with an S3 bucket that does not exist: the process keeps running with
its other jobs, reports the sink on its operations port (``/healthz`` degraded, ``/metrics``
``payorch_audit_sink_up{sink="s3"} 0``), and ships the waiting events once the bucket is created."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.conftest import scratch_database
from tests.integration.audit_sinks_support import AWS_TEST_CREDENTIALS, moto_s3, s3_client, wait_for
from tests.integration.served_payorch import environment, free_port

from payorch.audit.events import Actor, AuditEvent, Resource, record
from payorch.storage.database import Database, DatabaseConfig

pytestmark = pytest.mark.e2e

PAYORCH = str(Path(sys.executable).with_name("payorch"))


@pytest.fixture
def own_database() -> Iterator[str]:
    with scratch_database("payorch_workersink", partitions=2) as url:
        yield url


async def record_events(database_url: str, count: int) -> None:
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        async with db.transaction() as transaction:
            for i in range(count):
                resource = Resource(type="test", id=f"{i}")
                event = AuditEvent(actor=Actor(user="test:e2e"), action="test.recorded", resource=resource)
                await record(transaction, event)
    finally:
        await db.close()


async def test_the_worker_survives_a_missing_bucket_and_ships_once_it_exists(
    own_database: str, tmp_path: Path
) -> None:
    with moto_s3() as s3_url:
        bucket = f"audit-absent-{uuid.uuid4().hex[:8]}"
        port = free_port()
        env = environment(
            own_database,
            tmp_path,
            {
                "PAYORCH_DATA_DIR": str(tmp_path),
                "PAYORCH_WEBHOOKS__SECRET_KEY": Fernet.generate_key().decode(),
                "PAYORCH_METRICS__PORT": str(port),
                "PAYORCH_AUDIT__S3__BUCKET": bucket,
                "PAYORCH_AUDIT__S3__ENDPOINT_URL": s3_url,
                "PAYORCH_AUDIT__S3__REGION": "us-east-1",
                "PAYORCH_AUDIT__POLL_INTERVAL_SECONDS": "0.1",
                "PAYORCH_AUDIT__MAX_BATCH_AGE_SECONDS": "0.1",
                "PAYORCH_AUDIT__BACKOFF_MAX_SECONDS": "1",
                **AWS_TEST_CREDENTIALS,
            },
        )
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen([PAYORCH, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT)
        ops = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=ops, timeout=5) as client:

                def sink_state(state: str):
                    async def condition() -> bool:
                        assert worker.poll() is None, log.read_text()
                        try:
                            health = (await client.get("/healthz")).json()
                        except httpx.TransportError:
                            return False
                        return bool(health.get("audit_sinks", {}).get("s3", {}).get("state") == state)

                    return condition

                await record_events(own_database, 5)
                await wait_for(sink_state("misconfigured"), timeout=90, what="the worker reporting s3")
                answer = await client.get("/healthz")
                assert answer.status_code == 200
                assert answer.json()["status"] == "degraded"
                assert "NoSuchBucket" in answer.json()["audit_sinks"]["s3"]["error"]
                assert set(answer.json()["jobs"].values()) == {"running"}
                assert 'payorch_audit_sink_up{sink="s3"} 0.0' in (await client.get("/metrics")).text
                assert worker.poll() is None

                s3_client(s3_url).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
                await wait_for(sink_state("up"), timeout=90, what="s3 up once the bucket exists")
                assert (await client.get("/healthz")).json()["status"] == "ok"
                assert 'payorch_audit_sink_up{sink="s3"} 1.0' in (await client.get("/metrics")).text

                async def shipped() -> bool:
                    listed = s3_client(s3_url).list_objects_v2(Bucket=bucket).get("Contents", [])
                    return sum(item["Key"].endswith(".jsonl") for item in listed) > 0

                await wait_for(shipped, timeout=60, what="the waiting events in the bucket")
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=60)
        assert code == 0, log.read_text()
