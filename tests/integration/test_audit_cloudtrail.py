"""CloudTrail Lake sink against the cloudtrail-data protocol fake, driven by the real boto3 client."""

import base64
import hashlib
import json

import boto3
import pytest
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake

from payorch.audit.chain import GENESIS_HASH, chain_events
from payorch.audit.events import Actor, AuditEvent, Origin, Resource
from payorch.audit.sinks.base import SinkError, SinkMisconfigured
from payorch.audit.sinks.cloudtrail import CloudTrailLakeSink
from payorch.audit.sinks.s3 import make_aws_client

CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/payorch-audit"


@pytest.fixture(scope="module")
def fake():
    server = CloudTrailDataFake(channels={CHANNEL})
    server.start()
    yield server
    server.stop()


def client_for(fake: CloudTrailDataFake, *, secret: str = "testing"):  # noqa: S107
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key=secret, region_name="us-east-1")
    return make_aws_client(
        "cloudtrail-data",
        session=session,
        region="us-east-1",
        endpoint_url=fake.url,
        connect_timeout=2,
        read_timeout=5,
        max_attempts=1,
    )


def chained(n: int, tag: str):
    events = [
        AuditEvent(
            actor=Actor(merchant_id="mer_1", api_key_id="key_1"),
            action="charge.failed" if i % 2 else "charge.succeeded",
            resource=Resource(type="charge", id=f"ch_{tag}_{i}"),
            outcome="failure" if i % 2 else "success",
            origin=Origin(ip="203.0.113.9", request_id=f"req_{i}"),
            details={"code": "card_declined", "amount": 100 + i} if i % 2 else {"amount": 100 + i},
        ).redacted_payload()
        for i in range(n)
    ]
    return chain_events(GENESIS_HASH, 1, events)


def sink_for(fake, **kwargs) -> CloudTrailLakeSink:
    return CloudTrailLakeSink(client_for(fake), CHANNEL, retry_delay=0, **kwargs)


async def test_batches_are_split_into_calls_of_at_most_100_in_lake_format(fake):
    links = chained(250, "split")
    calls_before = len(fake.calls)
    await sink_for(fake).put_batch(links)
    new_calls = fake.calls[calls_before:]
    assert [len(ids) for ids in new_calls] == [100, 100, 50]
    stored = {e.id: e for e in fake.events(CHANNEL)}
    for link in links:
        assert fake.arrivals[link.event_id] == 1
        data = stored[link.event_id].event_data
        assert data["eventName"] == link.event["action"]
        assert data["UID"] == link.event_id
        assert data["recipientAccountId"] == "123456789012"
        assert data["userIdentity"] == {
            "type": "ApiKey",
            "principalId": "key_1",
            "details": link.event["actor"],
        }
        assert data["sourceIPAddress"] == "203.0.113.9"
        assert data["eventTime"].endswith("Z")
        assert len(data["eventTime"]) == 20
        assert data["additionalEventData"]["chain"] == {
            "seq": link.seq,
            "prevHash": link.prev_hash,
            "hash": link.hash,
        }
        assert data["additionalEventData"]["auditEvent"] == link.event
    failed = stored[links[1].event_id].event_data
    assert failed["errorCode"] == "card_declined"


async def test_only_failed_entries_are_retried_and_each_event_lands_once(fake):
    links = chained(120, "partial")
    flaky = [links[5].event_id, links[50].event_id, links[110].event_id]
    fake.fail_next(flaky, times=2)
    calls_before = len(fake.calls)
    await sink_for(fake, failed_entry_attempts=3).put_batch(links)
    new_calls = fake.calls[calls_before:]
    # chunk 1: 100 sent, 2 failed twice; chunk 2: 20 sent, 1 failed twice
    assert [len(ids) for ids in new_calls] == [100, 2, 2, 20, 1, 1]
    assert set(new_calls[1]) == {links[5].event_id, links[50].event_id}
    assert all(fake.arrivals[link.event_id] == 1 for link in links)


async def test_entries_still_failing_keep_the_batch_unshipped_and_a_resend_skips_the_delivered(fake):
    links = chained(30, "stuck")
    stuck = links[7].event_id
    fake.fail_next([stuck], times=5, code="ThrottlingException")
    sink = sink_for(fake, failed_entry_attempts=2)
    with pytest.raises(SinkError, match="ThrottlingException"):
        await sink.put_batch(links)
    assert fake.arrivals[stuck] == 0
    calls_before = len(fake.calls)
    fake.fail_next([stuck], times=0)
    await sink.put_batch(links)  # the shipper re-sends the whole batch
    assert fake.calls[calls_before:] == [[stuck]]
    assert all(fake.arrivals[link.event_id] == 1 for link in links)


async def test_outage_is_a_sink_error_and_nothing_is_stored(fake):
    links = chained(3, "outage")
    fake.outage = True
    try:
        with pytest.raises(SinkError, match="ServiceUnavailable"):
            await sink_for(fake).put_batch(links)
    finally:
        fake.outage = False
    assert all(fake.arrivals[link.event_id] == 0 for link in links)
    await sink_for(fake).put_batch(links)
    assert all(fake.arrivals[link.event_id] == 1 for link in links)


async def test_wrong_signature_is_refused(fake):
    sink = CloudTrailLakeSink(client_for(fake, secret="not-the-secret"), CHANNEL)
    with pytest.raises(SinkError):
        await sink.put_batch(chained(1, "badsig"))
    assert fake.rejected[-1] == "InvalidSignatureException: signature does not match"


async def test_unknown_channel_is_misconfiguration(fake):
    other = "arn:aws:cloudtrail:us-east-1:123456789012:channel/nope"
    sink = CloudTrailLakeSink(client_for(fake), other)
    with pytest.raises(SinkMisconfigured, match="ChannelNotFound"):
        await sink.put_batch(chained(1, "nochannel"))


def test_checksum_is_base64_sha256_of_event_data(fake):
    sink = sink_for(fake)
    [link] = chained(1, "checksum")
    entry = sink._entry(link)
    digest = hashlib.sha256(entry["eventData"].encode()).digest()
    assert entry["eventDataChecksum"] == base64.b64encode(digest).decode()
    assert json.loads(entry["eventData"])["version"] == "1.0"


def test_bad_channel_arn_is_refused_at_construction(fake):
    with pytest.raises(ValueError, match="channel ARN"):
        CloudTrailLakeSink(client_for(fake), "arn:aws:cloudtrail:us-east-1:123:trail/x")
