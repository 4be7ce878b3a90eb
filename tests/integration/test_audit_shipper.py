"""The shipper on the project's migrated Postgres, with the local sink and the cloudtrail-data fake.

The chain is global: other tests' events are in it too, so every test uses sinks with fresh names
(cursors start at 0) and asserts on its own events, identified by a per-test tag.
"""

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import boto3
import pytest
from tests.factories import fetch_rows
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake

from payorch.audit.chain import ChainedEvent
from payorch.audit.events import Actor, AuditEvent, Origin, Resource, record
from payorch.audit.shipper import AuditShipper, ShipperMetrics
from payorch.audit.sinks.base import AuditSink, SinkError, SinkMisconfigured
from payorch.audit.sinks.cloudtrail import CloudTrailLakeSink
from payorch.audit.sinks.local import LocalDirectorySink
from payorch.audit.sinks.s3 import make_aws_client
from payorch.audit.verify import verify_sink
from payorch.storage import audit as audit_store
from payorch.storage.database import Database, DatabaseConfig

CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/payorch-shipper"


class Switchable:
    """A real sink that the test can take down: puts and checks fail while ``down``."""

    def __init__(self, inner: AuditSink) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = False

    async def check(self) -> None:
        if self.down:
            raise SinkError(f"{self.name} is down")
        await self.inner.check()

    async def put_batch(self, events: list[ChainedEvent]) -> None:
        if self.down:
            raise SinkError(f"{self.name} is down")
        await self.inner.put_batch(events)

    async def read_all(self) -> list[ChainedEvent]:
        return await self.inner.read_all()


class Misconfigured:
    name = "misconfigured"

    async def check(self) -> None:
        raise SinkMisconfigured("bucket has no Object Lock")

    async def put_batch(self, events: list[ChainedEvent]) -> None:  # noqa: ARG002
        raise AssertionError("never shipped to")

    async def read_all(self) -> list[ChainedEvent]:
        return []


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[Database]:
    built = Database(DatabaseConfig(database_url, pool_size=10))
    yield built
    await built.close()


@pytest.fixture(scope="module")
def fake():
    server = CloudTrailDataFake(channels={CHANNEL})
    server.start()
    yield server
    server.stop()


def cloudtrail_sink(fake: CloudTrailDataFake, name: str) -> CloudTrailLakeSink:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    client = make_aws_client(
        "cloudtrail-data",
        session=session,
        endpoint_url=fake.url,
        connect_timeout=2,
        read_timeout=5,
        max_attempts=1,
    )
    return CloudTrailLakeSink(client, CHANNEL, name=name, retry_delay=0)


def shipper_for(db: Database, sinks, **kwargs) -> AuditShipper:
    kwargs.setdefault("batch_size", 100)
    kwargs.setdefault("max_batch_age", 0)
    return AuditShipper(db, sinks, backoff_initial=0, backoff_max=0, **kwargs)


def charge_event(tag: str, i: int, **details) -> AuditEvent:
    return AuditEvent(
        actor=Actor(merchant_id=f"mer_{tag}", api_key_id=f"key_{tag}"),
        action="charge.created",
        resource=Resource(type="charge", id=f"ch_{tag}_{i}"),
        origin=Origin(ip="192.0.2.1", request_id=f"req_{tag}_{i}"),
        details={"i": i, "tag": tag, **details},
    )


async def record_many(db: Database, tag: str, count: int, concurrency: int = 10) -> list[str]:
    """``count`` separate committed transactions, ``concurrency`` at a time (so commit order and outbox
    order interleave as they do under load)."""
    ids: list[str] = []

    async def one(i: int) -> None:
        event = charge_event(tag, i)
        async with db.transaction() as transaction:
            await record(transaction, event)
        ids.append(event.id)

    for start in range(0, count, concurrency):
        await asyncio.gather(*(one(i) for i in range(start, min(count, start + concurrency))))
    return ids


async def tip(db: Database) -> int:
    async with db.transaction() as transaction:
        return (await audit_store.chain_tip(transaction))[0]


async def cursor_of(db: Database, name: str) -> int:
    async with db.connection() as connection:
        return (await audit_store.get_cursors(connection)).get(name, 0)


async def ship_until_caught_up(shipper: AuditShipper, db: Database, name: str, rounds: int = 100):
    for _ in range(rounds):
        await shipper.run_once()
        if await cursor_of(db, name) == await tip(db):
            return
    raise AssertionError(f"sink {name} did not catch up in {rounds} rounds")


def mine(events: list[ChainedEvent], tag: str) -> list[ChainedEvent]:
    return [e for e in events if e.event["details"].get("tag") == tag]


async def test_sinks_down_then_up_ship_every_event_once_in_chain_order(db, fake, tmp_path: Path):
    tag = uuid.uuid4().hex[:8]
    local = Switchable(LocalDirectorySink(tmp_path / "audit", name=f"local-{tag}"))
    trail = cloudtrail_sink(fake, f"cloudtrail-{tag}")
    counts: dict[str, int] = {}
    failures: dict[str, int] = {}
    metrics = ShipperMetrics(
        on_shipped=lambda sink, n: counts.__setitem__(sink, counts.get(sink, 0) + n),
        on_failed=lambda sink, n: failures.__setitem__(sink, failures.get(sink, 0) + n),
    )
    shipper = shipper_for(db, [local, trail], metrics=metrics)

    local.down = True
    fake.outage = True
    ids = await record_many(db, tag, 1000)
    report = await shipper.run_once()
    assert report.lock_acquired
    assert set(report.failed) == {local.name, trail.name}
    assert await cursor_of(db, local.name) == 0
    assert await cursor_of(db, trail.name) == 0
    async with db.connection() as connection:
        assert await audit_store.count_outbox(connection) == 0  # all chained while the sinks were down

    # One sink back: it catches up while the other is still down.
    local.down = False
    await ship_until_caught_up(shipper, db, local.name)
    assert await cursor_of(db, trail.name) == 0
    assert failures[trail.name] > 0

    fake.outage = False
    await ship_until_caught_up(shipper, db, trail.name)

    stored = await local.read_all()
    shipped_mine = mine(stored, tag)
    assert sorted(e.event_id for e in shipped_mine) == sorted(ids)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))  # each position once, in order
    async with db.connection() as connection:
        anchors = await audit_store.chain_hashes(connection)
    report = await verify_sink(local, anchors=anchors)
    assert report.ok, report.summary()
    assert report.duplicates_ignored == 0

    assert all(fake.arrivals[event_id] == 1 for event_id in ids)
    trail_seqs = [
        e.event_data["additionalEventData"]["chain"]["seq"]
        for e in fake.events(CHANNEL)
        if e.event_data["additionalEventData"]["auditEvent"]["details"].get("tag") == tag
    ]
    assert trail_seqs == sorted(trail_seqs)
    assert len(trail_seqs) == 1000
    assert counts[local.name] == counts[trail.name] == len(stored)


async def test_one_holder_at_a_time(db, tmp_path: Path):
    first = shipper_for(db, [LocalDirectorySink(tmp_path / "a", name=f"a-{uuid.uuid4().hex[:8]}")])
    second = shipper_for(db, [LocalDirectorySink(tmp_path / "b", name=f"b-{uuid.uuid4().hex[:8]}")])
    assert await first._acquire_lock()
    try:
        report = await second.run_once()
        assert not report.lock_acquired
        assert report.shipped == {}
    finally:
        await first._release_lock()
    assert (await second.run_once()).lock_acquired


async def test_partial_batches_wait_for_their_age_unless_forced(db, tmp_path: Path):
    tag = uuid.uuid4().hex[:8]
    sink = LocalDirectorySink(tmp_path, name=f"aged-{tag}")
    shipper = shipper_for(db, [sink], batch_size=10_000, max_batch_age=3600)
    await record_many(db, tag, 3)
    report = await shipper.run_once()
    assert report.shipped[sink.name] == 0
    assert await sink.read_all() == []
    report = await shipper.run_once(force=True)
    assert report.shipped[sink.name] == await tip(db)
    assert len(mine(await sink.read_all(), tag)) == 3


async def test_adversarial_details_never_reach_a_sink(db, fake, tmp_path: Path):
    tag = uuid.uuid4().hex[:8]
    local = LocalDirectorySink(tmp_path, name=f"local-{tag}")
    trail = cloudtrail_sink(fake, f"cloudtrail-{tag}")
    secrets = {
        "free": "customer typed 4242 4242 4242 4242 into the notes",
        "metadata": {"card": "5555-5555-5555-4444", "nested": [{"n": 378282246310005}]},
        "token": "tok_1N3T00LkdIwHu7ixt44h1F8k",
        "stripe": "sk_live_51H8abcdefghijklmnop",
        "webhook": "whsec_C2VjcmV0c2VjcmV0c2VjcmV0",
        "auth": "Bearer ya29.a0AfH6SMBx-secret-oauth-token",
        "refresh_token": "1//0gLm-refresh",
        "aws": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    event = charge_event(tag, 0, **secrets)
    async with db.transaction() as transaction:
        await record(transaction, event)
    shipper = shipper_for(db, [local, trail])
    await ship_until_caught_up(shipper, db, trail.name)
    await ship_until_caught_up(shipper, db, local.name)

    files = "".join(path.read_text() for path in sorted(tmp_path.iterdir()))
    lake = json.dumps([e.event_data for e in fake.events(CHANNEL) if e.id == event.id])
    assert event.id in files
    assert event.id in lake
    forbidden = [
        "4242424242424242", "5555555555554444", "378282246310005", "tok_1N3T00LkdIwHu7ixt44h1F8k",
        "51H8abcdefghijklmnop", "C2VjcmV0c2VjcmV0c2VjcmV0", "ya29.a0AfH6SMBx", "1//0gLm-refresh",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ]  # fmt: skip
    for stored in (files, lake):
        flat = stored.replace(" ", "").replace("-", "")
        for secret in forbidden:
            assert secret.replace(" ", "").replace("-", "") not in flat, secret


async def test_run_forever_ships_as_events_arrive_and_stops(db, tmp_path: Path):
    tag = uuid.uuid4().hex[:8]
    sink = LocalDirectorySink(tmp_path, name=f"forever-{tag}")
    lags: list[float] = []
    shipper = AuditShipper(
        db, [sink], batch_size=50, max_batch_age=0, poll_interval=0.05,
        metrics=ShipperMetrics(on_lag=lambda _sink, seconds: lags.append(seconds)),
    )  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(shipper.run_forever(stop))
    try:
        await record_many(db, tag, 20)
        deadline = time.monotonic() + 30
        while len(mine(await sink.read_all(), tag)) < 20:
            assert time.monotonic() < deadline, "events were not shipped within 30 s"
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    assert len(mine(await sink.read_all(), tag)) == 20
    assert lags
    assert lags[-1] == 0.0
    assert (await verify_sink(sink)).ok


async def test_a_misconfigured_sink_is_named_at_start_and_no_longer_stops_the_shipper(db, tmp_path: Path):
    """The preflight still names the misconfiguration; running, the shipper reports it and ships to
    the other sinks (tests/integration/test_audit_sink_health.py goes further, on moto)."""
    tag = uuid.uuid4().hex[:8]
    good = LocalDirectorySink(tmp_path, name=f"good-{tag}")
    shipper = AuditShipper(db, [Misconfigured(), good], batch_size=50, max_batch_age=0, poll_interval=0.05)
    with pytest.raises(SinkMisconfigured, match="Object Lock"):
        await shipper.check_sinks()
    stop = asyncio.Event()
    task = asyncio.create_task(shipper.run_forever(stop))
    try:
        await record_many(db, tag, 5)
        deadline = time.monotonic() + 30
        while len(mine(await good.read_all(), tag)) < 5:
            assert time.monotonic() < deadline, "the healthy sink did not get its events"
            assert not task.done(), task
            await asyncio.sleep(0.05)
        health = shipper.health()
        assert health["misconfigured"].state == "misconfigured"
        assert "Object Lock" in (health["misconfigured"].error or "")
        assert health[good.name].state == "up"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_the_chain_table_is_append_only(db, tmp_path: Path):
    await record_many(db, uuid.uuid4().hex[:8], 1)
    await shipper_for(db, [LocalDirectorySink(tmp_path, name=f"ao-{uuid.uuid4().hex[:8]}")]).run_once()
    last = await tip(db)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await fetch_rows(db, "UPDATE audit_chain SET canonical = '{}' WHERE seq = $1", last)
    with pytest.raises(asyncpg.PostgresError, match="append-only"):
        await fetch_rows(db, "DELETE FROM audit_chain WHERE seq = $1", last)


def test_sink_names_must_be_unique(db, tmp_path: Path):
    with pytest.raises(ValueError, match="unique"):
        shipper_for(
            db,
            [LocalDirectorySink(tmp_path / "x", name="same"), LocalDirectorySink(tmp_path, name="same")],
        )
