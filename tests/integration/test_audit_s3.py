"""S3 Object Lock sink on moto's server mode, driven by the real boto3 client over HTTP."""

import datetime as dt
import socket
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from payorch.audit.chain import GENESIS_HASH, chain_events
from payorch.audit.sinks.base import SinkMisconfigured
from payorch.audit.sinks.s3 import S3ObjectLockSink, make_aws_client
from payorch.audit.verify import verify_sink


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_url():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3(s3_url):
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return make_aws_client(
        "s3", session=session, region="us-east-1", endpoint_url=s3_url, connect_timeout=2, read_timeout=5
    )


@pytest.fixture
def locked_bucket(s3) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def links(n: int, start: int = 1, prev: str = GENESIS_HASH, day: str = "2024-03-05"):
    events = [
        {"id": f"aud_{i:026d}", "occurred_at": f"{day}T10:00:00.000000Z", "action": "charge.captured"}
        for i in range(start, start + n)
    ]
    return chain_events(prev, start, events)


async def test_bucket_without_object_lock_is_refused(s3):
    plain = f"plain-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=plain)
    with pytest.raises(SinkMisconfigured):
        await S3ObjectLockSink(s3, plain).check()
    with pytest.raises(SinkMisconfigured):
        await S3ObjectLockSink(s3, f"missing-{uuid.uuid4().hex[:12]}").check()


async def test_shipped_objects_carry_retention_checksum_and_resist_deletion(s3, locked_bucket):
    sink = S3ObjectLockSink(s3, locked_bucket, prefix="payorch", retention_days=30)
    await sink.check()
    batch = links(3)
    await sink.put_batch(batch)
    key = "payorch/audit/2024/03/05/000000000001-000000000003.jsonl"
    head = s3.head_object(Bucket=locked_bucket, Key=key, ChecksumMode="ENABLED")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    retain = head["ObjectLockRetainUntilDate"]
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    assert abs((retain - expected).total_seconds()) < 3600
    assert head["ChecksumSHA256"]

    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=locked_bucket, Key=key, VersionId=head["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    body = s3.get_object(Bucket=locked_bucket, Key=key, VersionId=head["VersionId"])["Body"].read()
    assert body.decode().count("\n") == 3


async def test_compliance_mode_is_passed_through(s3, locked_bucket):
    sink = S3ObjectLockSink(s3, locked_bucket, lock_mode="COMPLIANCE", retention_days=1)
    await sink.put_batch(links(1))
    head = s3.head_object(Bucket=locked_bucket, Key="audit/2024/03/05/000000000001-000000000001.jsonl")
    assert head["ObjectLockMode"] == "COMPLIANCE"


async def test_read_all_orders_by_chain_position_not_date_and_verifies(s3, locked_bucket):
    sink = S3ObjectLockSink(s3, locked_bucket)
    first = links(2, day="2024-03-06")
    second = links(2, start=3, prev=first[-1].hash, day="2024-03-05")  # a late committer's date
    await sink.put_batch(first)
    await sink.put_batch(second)
    await sink.put_batch(second)  # re-shipped after a lost cursor update: same key, new version
    assert await sink.read_all() == first + second
    report = await verify_sink(sink)
    assert report.ok
    assert report.last_seq == 4


async def test_a_new_version_with_altered_content_is_named_by_verify(s3, locked_bucket):
    sink = S3ObjectLockSink(s3, locked_bucket)
    batch = links(4)
    await sink.put_batch(batch)
    key = sink.key_for(batch)
    original = s3.get_object(Bucket=locked_bucket, Key=key)["Body"].read().decode()
    forged = original.replace('"charge.captured"', '"charge.canceled"', 1)
    s3.put_object(Bucket=locked_bucket, Key=key, Body=forged.encode())
    report = await verify_sink(sink)
    assert report.first_problem.kind == "altered"
    assert report.first_problem.seq == 1
    assert report.first_problem.event_id == batch[0].event_id


async def test_a_delete_marker_hiding_a_batch_is_a_gap(s3, locked_bucket):
    sink = S3ObjectLockSink(s3, locked_bucket)
    first = links(2)
    second = links(2, start=3, prev=first[-1].hash)
    third = links(2, start=5, prev=second[-1].hash)
    for batch in (first, second, third):
        await sink.put_batch(batch)
    s3.delete_object(Bucket=locked_bucket, Key=sink.key_for(second))  # allowed: only adds a marker
    report = await verify_sink(sink)
    assert report.first_problem.kind == "gap"
    assert report.first_problem.seq == 3
