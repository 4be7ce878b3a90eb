"""What the audit sink tests share: moto's S3 on a port of its own, the cloudtrail-data fake, a
Runtime's settings for all three sinks, and reads of the chain and the cursors."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import make_settings
from tests.fakes.cloudtrail_data_server import CloudTrailDataFake
from tests.integration.served_payorch import free_port

from payorch.audit.sinks.s3 import make_aws_client
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage import audit as audit_store

CHANNEL = "arn:aws:cloudtrail:us-east-1:123456789012:channel/payorch-sinks"
AWS_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@contextmanager
def cloudtrail_fake() -> Iterator[CloudTrailDataFake]:
    """The cloudtrail-data fake, knowing ``CHANNEL``, for a block."""
    fake = CloudTrailDataFake(channels={CHANNEL})
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's server mode on a port of its own: its URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(url: str, **credentials: str) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=credentials.get("key", "testing"),
        aws_secret_access_key=credentials.get("secret", "testing"),
    )
    return make_aws_client("s3", session=session, region="us-east-1", endpoint_url=url)


def locked_bucket(url: str) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    s3_client(url).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def sink_settings(
    database_url: str,
    data_dir: Path,
    *,
    s3: dict[str, Any] | None = None,
    cloudtrail: dict[str, Any] | None = None,
    **audit: Any,
) -> Settings:
    """A Runtime's settings with the local sink and the given AWS sinks, shipping promptly, each AWS
    call held to a few seconds and every sink call to ``sink_timeout_seconds``."""
    aws = {"region": "us-east-1", "connect_timeout_seconds": 2, "read_timeout_seconds": 3, "max_attempts": 1}
    config: dict[str, Any] = {
        "local": {"directory": str(data_dir / "audit-local")},
        "max_batch_age_seconds": 0.1,
        "poll_interval_seconds": 0.05,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 1.0,
        "sink_timeout_seconds": 1.0,
        **audit,
    }
    if s3 is not None:
        config["s3"] = {**aws, **s3}
    if cloudtrail is not None:
        config["cloudtrail"] = {"channel_arn": CHANNEL, **aws, **cloudtrail}
    return make_settings(
        database_url,
        data_dir=data_dir,
        breaker={"enabled": False},
        audit=config,
    )


@contextmanager
def aws_credentials(credentials: dict[str, str] | None = None) -> Iterator[None]:
    """The standard credential chain's variables, as a deployment sets them, for this block only."""
    saved = {name: os.environ.get(name) for name in AWS_TEST_CREDENTIALS}
    os.environ.update(credentials or AWS_TEST_CREDENTIALS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


async def wait_for(condition: Callable[[], Awaitable[Any]], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met before the deadline")
        await asyncio.sleep(0.05)


async def chain_state(runtime: Runtime) -> tuple[int, int, dict[str, int]]:
    """(events waiting in the outbox, chain tip, each sink's cursor)."""
    async with runtime.db.transaction() as transaction:
        pending = await audit_store.count_outbox(transaction)
        tip, _ = await audit_store.chain_tip(transaction)
        return pending, tip, await audit_store.get_cursors(transaction)


def caught_up(runtime: Runtime, *sinks: str) -> Callable[[], Awaitable[bool]]:
    """A condition: nothing left to chain, and each of ``sinks`` has the whole chain."""

    async def condition() -> bool:
        pending, tip, cursors = await chain_state(runtime)
        return pending == 0 and tip > 0 and all(cursors.get(sink, 0) == tip for sink in sinks)

    return condition


def counter(runtime: Runtime, name: str, **labels: str) -> float:
    """A metric's value in ``runtime`` (the sum over the samples with these labels)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(runtime.metrics.render().decode())
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def gauges(runtime: Runtime, name: str) -> dict[str, float]:
    """A per-sink gauge as a scrape reads it (shared state refreshed first)."""
    await runtime.refresh_gauges()
    return {
        sample.labels["sink"]: sample.value
        for family in text_string_to_metric_families(runtime.metrics.render().decode())
        for sample in family.samples
        if sample.name == name
    }


@contextmanager
def moto_s3_with_iam() -> Iterator[tuple[str, dict[str, str]]]:
    """moto's server mode in a process of its own with IAM enforced (every request signed by a
    known key and allowed by its user's policy): its URL and an administrator's key. The first three
    requests are free, to make that administrator."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for_port(port, server)
        iam = _client("iam", url, AWS_TEST_CREDENTIALS)
        iam.create_user(UserName="auditor-admin")
        key = iam.create_access_key(UserName="auditor-admin")["AccessKey"]
        iam.put_user_policy(UserName="auditor-admin", PolicyName="all", PolicyDocument=_allow("*"))
        yield url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        server.terminate()
        server.wait(timeout=30)


def iam_user_without_permissions(url: str, admin: dict[str, str], name: str) -> dict[str, str]:
    """A user whose key is valid but may do nothing yet: every S3 call it makes is refused."""
    iam = _client("iam", url, admin)
    iam.create_user(UserName=name)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def grant_s3(url: str, admin: dict[str, str], name: str) -> None:
    _client("iam", url, admin).put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=_allow("s3:*"))


def admin_s3(url: str, admin: dict[str, str]) -> Any:
    return _client("s3", url, admin)


def _client(service: str, url: str, credentials: dict[str, str]) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"], aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"]
    )
    return make_aws_client(service, session=session, region="us-east-1", endpoint_url=url)


def _allow(action: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]})


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        assert process.poll() is None, "moto_server exited"
        with socket.socket() as sock:
            sock.settimeout(1)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise AssertionError("moto_server did not listen in time")
        time.sleep(0.05)
