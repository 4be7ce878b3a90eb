"""The Runtime's audit shipper against all three sinks while charges go through the app.

A dedicated database (so the chain holds exactly this module's events), S3 Object Lock on moto's
``ThreadedMotoServer`` behind a TCP proxy the test can block, the ``cloudtrail-data`` fake with its
outage switch, and a local directory. The Runtime is built from settings alone, as in production.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import make_url
from tests.conftest import _admin, _server_url, make_settings, run_in_thread
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake
from tests.integration.audit_sinks_support import chain_state, wait_for

from payorch.app import create_app
from payorch.audit.chain import ChainedEvent
from payorch.audit.sinks.s3 import make_aws_client
from payorch.audit.verify import verify, verify_configured
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage import audit as audit_store
from payorch.storage.bootstrap import run_migrations

CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/payorch-integration"
CHARGES = 1000
CONCURRENCY = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BlockableProxy:
    """A TCP forwarder in front of a server. ``blocked`` makes it cut every new and open connection,
    as a network partition would, without stopping the server behind it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blocked = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def block(self) -> None:
        self.blocked = True
        with self._lock:
            for sock in list(self._open):
                self._close(sock)

    def unblock(self) -> None:
        self.blocked = False

    def close(self) -> None:
        self._closing = True
        self._listener.close()
        self.block()

    def _close(self, sock: socket.socket) -> None:
        self._open.discard(sock)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.blocked:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        with self._lock:
            self._close(source)
            self._close(sink)


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    server = _server_url()
    name = f"payorch_audit_{secrets.token_hex(4)}"
    run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    run_migrations(url, partitions=4)
    yield url
    run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def aws_env(monkeypatch_module: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch_module.setenv(name, value)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


@pytest.fixture(scope="module")
def s3_proxy(aws_env: None) -> Iterator[BlockableProxy]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    proxy = BlockableProxy(port)
    yield proxy
    proxy.close()
    server.stop()


@pytest.fixture(scope="module")
def cloudtrail() -> Iterator[CloudTrailDataFake]:
    fake = CloudTrailDataFake(channels={CHANNEL})
    fake.start()
    yield fake
    fake.stop()


def s3_client(proxy: BlockableProxy) -> Any:
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    return make_aws_client("s3", session=session, region="us-east-1", endpoint_url=f"http://127.0.0.1:{proxy.port}")


@pytest.fixture(scope="module")
def bucket(s3_proxy: BlockableProxy) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3_client(s3_proxy).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture(scope="module")
def audit_settings(
    own_database: str, tmp_path_factory: pytest.TempPathFactory, s3_proxy: BlockableProxy, bucket: str, cloudtrail
) -> Settings:
    aws = {"region": "us-east-1", "connect_timeout_seconds": 2, "read_timeout_seconds": 5, "max_attempts": 1}
    return make_settings(
        own_database,
        data_dir=tmp_path_factory.mktemp("payorch-data"),
        db_pool_size=10,
        api={"api_key_cache_seconds": 5},
        # This module is about the audit trail: a loaded machine's slow sandbox must not trip breakers.
        breaker={"enabled": False},
        ratelimit={"enabled": False},
        audit={
            "local": {"directory": str(tmp_path_factory.mktemp("audit-local"))},
            "s3": {"bucket": bucket, "prefix": "payorch", "endpoint_url": f"http://127.0.0.1:{s3_proxy.port}", **aws},
            "cloudtrail": {"channel_arn": CHANNEL, "endpoint_url": cloudtrail.url, **aws},
            "batch_size": 500,
            "max_batch_age_seconds": 0.2,
            "poll_interval_seconds": 0.05,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 2.0,
        },
    )


@pytest.fixture(scope="module")
async def started(audit_settings: Settings, own_database: str) -> AsyncIterator[Runtime]:
    runtime = await Runtime.build(audit_settings, own_database)
    runtime.start_background()
    yield runtime
    await runtime.aclose()


@pytest.fixture(scope="module")
async def app_client(audit_settings: Settings, started: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(audit_settings, runtime=started))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test", timeout=60) as http:
        yield http


async def all_shipped(runtime: Runtime) -> bool:
    pending, tip, cursors = await chain_state(runtime)
    return pending == 0 and all(cursors.get(name, 0) == tip for name in ("local", "s3", "cloudtrail"))


def cloudtrail_links(fake: CloudTrailDataFake) -> list[ChainedEvent]:
    """The chain as CloudTrail Lake holds it, in arrival order, rebuilt from each event's
    ``additionalEventData`` (what an event data store query would return)."""
    links = []
    for stored in fake.events(CHANNEL):
        extra = stored.event_data["additionalEventData"]
        chain = extra["chain"]
        links.append(ChainedEvent(chain["seq"], chain["prevHash"], chain["hash"], extra["auditEvent"]))
    return links


async def post(client: httpx.AsyncClient, merchant: MerchantFixture, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/charges", json=body, headers=merchant.headers)


async def sink_texts(settings: Settings, fake: CloudTrailDataFake, proxy: BlockableProxy) -> dict[str, str]:
    """Everything each sink holds, as raw text."""
    local_dir = settings.audit.local.directory if settings.audit.local else None
    assert local_dir is not None
    local = "".join(path.read_text() for path in sorted(Path(local_dir).glob("*.jsonl")))
    client = s3_client(proxy)
    s3 = ""
    for item in client.list_objects_v2(Bucket=settings.audit.s3.bucket).get("Contents", []):  # type: ignore[union-attr]
        s3 += client.get_object(Bucket=settings.audit.s3.bucket, Key=item["Key"])["Body"].read().decode()  # type: ignore[union-attr]
    trail = "".join(str(stored.event_data) for stored in fake.events(CHANNEL))
    return {"local": local, "s3": s3, "cloudtrail": trail}


async def test_adversarial_card_numbers_and_keys_never_reach_a_sink(
    started: Runtime,
    app_client: httpx.AsyncClient,
    audit_settings: Settings,
    cloudtrail: CloudTrailDataFake,
    s3_proxy: BlockableProxy,
) -> None:
    merchant = await create_merchant(started)
    live_key = "sk_live_" + "Z" * 44
    # Credentials in free text are accepted as text and must be masked before anything is stored.
    with_keys = await post(
        app_client,
        merchant,
        charge_body(description=f"retry with {merchant.key}", metadata={"api_key": merchant.key, "note": live_key}),
    )
    assert with_keys.status_code == 201
    # Card numbers: refused with 400 before anything is stored (DESIGN.md section 11), or, where
    # that refusal is not in place, masked by the audit redaction. Either way no sink may see one.
    pans = ("4242424242424242", "4000 0566 5566 5556", "5555-5555-5555-4444")
    with_pans = await post(
        app_client,
        merchant,
        charge_body(description=f"card {pans[0]} by phone", metadata={"card": pans[1], "backup": pans[2]}),
    )
    assert with_pans.status_code in (201, 400)
    await wait_for(lambda: all_shipped(started))
    texts = await sink_texts(audit_settings, cloudtrail, s3_proxy)
    for name, stored in texts.items():
        assert with_keys.json()["id"] in stored, f"the charge's events did not reach {name}"
        for secret in (*pans, merchant.key, merchant.key[8:], live_key[8:]):
            assert secret not in stored, f"{secret[:6]}... reached the {name} sink"
        assert "4242424242424242" not in stored.replace(" ", "").replace("-", "")
    if with_pans.status_code == 201:
        assert with_pans.json()["id"] in texts["local"]
        assert "424242******4242" in texts["local"]
    else:
        assert with_pans.json()["error"]["type"] == "invalid_request_error"
        assert all(with_pans.headers["Request-Id"] not in stored for stored in texts.values())


@pytest.mark.timeout(300)  # ~40 s on an idle 2-core machine; several test runs share it
async def test_sinks_down_during_1000_charges_ship_everything_once_in_order(
    own_database: str,
    started: Runtime,
    app_client: httpx.AsyncClient,
    audit_settings: Settings,
    cloudtrail: CloudTrailDataFake,
    s3_proxy: BlockableProxy,
) -> None:
    merchant = await create_merchant(started)
    await wait_for(lambda: all_shipped(started))
    _, tip_before, _ = await chain_state(started)

    s3_proxy.block()
    cloudtrail.outage = True
    try:
        statuses: list[int] = []
        for start in range(0, CHARGES, CONCURRENCY):
            batch = [post(app_client, merchant, charge_body(amount=100 + i)) for i in range(start, start + CONCURRENCY)]
            statuses += [response.status_code for response in await asyncio.gather(*batch)]
        assert statuses == [201] * CHARGES

        async def local_caught_up_alone() -> bool:
            pending, tip, cursors = await chain_state(started)
            return pending == 0 and cursors.get("local") == tip

        # One sink's outage never holds another back: the local copy keeps up while AWS is down.
        await wait_for(local_caught_up_alone)
        _, tip, cursors = await chain_state(started)
        assert tip - tip_before >= 4 * CHARGES
        assert cursors["s3"] <= tip_before
        assert cursors["cloudtrail"] <= tip_before
    finally:
        s3_proxy.unblock()
        cloudtrail.outage = False

    await wait_for(lambda: all_shipped(started), timeout=90)
    _, tip, _ = await chain_state(started)

    # Exactly once, in chain order, and verify passes: S3 and local through the CLI's own check ...
    results = await verify_configured(audit_settings.audit, data_dir=audit_settings.data_dir, database_url=own_database)
    assert results.ok, results.lines
    assert {name: report.last_seq for name, report in results.reports.items()} == {"local": tip, "s3": tip}
    for name in ("local", "s3"):
        sink = next(s for s in started.audit_shipper.sinks if s.name == name)  # type: ignore[union-attr]
        seqs = [link.seq for link in await sink.read_all()]
        assert seqs == list(range(1, tip + 1)), f"{name}: not every position exactly once, in order"
    # ... and CloudTrail Lake as an event data store query would return it.
    links = cloudtrail_links(cloudtrail)
    assert [link.seq for link in links] == list(range(1, tip + 1))
    assert set(cloudtrail.arrivals.values()) == {1}
    async with started.db.connection() as connection:
        anchors = await audit_store.chain_hashes(connection)
    report = verify(links, anchors=anchors)
    assert report.ok, report.summary()
    assert report.last_seq == tip
