"""S3 sink: one object per batch in an Object Lock bucket (WORM), each put with a SHA-256 checksum.

Keys: ``<prefix>audit/YYYY/MM/DD/<first-seq>-<last-seq>.jsonl``, the date being the first event's
(UTC). boto3 is blocking, so every call runs on the sink's own thread (``SinkThread``); the client is built by
``make_aws_client`` with explicit timeouts and a bounded retry budget, and handed in.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from payorch.audit.chain import ChainedEvent
from payorch.audit.sinks.base import (
    SinkError,
    SinkMisconfigured,
    SinkThread,
    batch_name,
    decode_batch,
    encode_batch,
    parse_batch_name,
)

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]

_MISCONFIGURED_CODES = frozenset(
    {
        "NoSuchBucket", "ObjectLockConfigurationNotFoundError", "AccessDenied", "InvalidBucketName",
        # A refused credential: retried with backoff like the rest, but reported as configuration.
        "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled",
    }
)  # fmt: skip


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ObjectLockSink:
    """Ships batches to an S3 bucket that has Object Lock enabled.

    ``client`` is a boto3 S3 client (typed ``Any``: boto3 ships no types). Every object gets
    ``ObjectLockMode`` and ``ObjectLockRetainUntilDate`` explicitly, so retention holds even when
    the bucket has no default rule.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        lock_mode: LockMode = "GOVERNANCE",
        retention_days: int = 365,
        name: str = "s3",
    ) -> None:
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        self.name = name
        self._client = client
        self._bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._lock_mode = lock_mode
        self._retention = dt.timedelta(days=retention_days)
        self._thread = SinkThread(name)

    def key_for(self, events: list[ChainedEvent]) -> str:
        day = _event_date(events[0])
        return f"{self._prefix}audit/{day:%Y/%m/%d}/{batch_name(events)}"

    async def check(self) -> None:
        """Refuse a bucket without Object Lock: an audit trail that can be deleted is not one."""
        try:
            response = await self._thread.run(self._client.get_object_lock_configuration, Bucket=self._bucket)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "Object Lock check failed") from exc
        enabled = response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
        if enabled != "Enabled":
            raise SinkMisconfigured(f"s3://{self._bucket} does not have Object Lock enabled")

    async def put_batch(self, events: list[ChainedEvent]) -> None:
        if not events:
            return
        body = encode_batch(events)
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        retain_until = dt.datetime.now(dt.UTC) + self._retention
        try:
            await self._thread.run(
                self._client.put_object,
                Bucket=self._bucket,
                Key=self.key_for(events),
                Body=body,
                ContentType="application/x-ndjson",
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
                ObjectLockMode=self._lock_mode,
                ObjectLockRetainUntilDate=retain_until,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "put failed") from exc

    async def read_all(self) -> list[ChainedEvent]:
        """Every batch object's current version, in chain-position order (not date order: a late
        committed event can carry an earlier date than the batch before it)."""
        try:
            return await self._thread.run(self._read_all)
        except (ClientError, BotoCoreError) as exc:
            raise SinkError(f"s3://{self._bucket}: read failed: {exc}") from exc

    def _error(self, exc: Exception, what: str) -> SinkError:
        """A configuration problem (no bucket, no Object Lock, a refused credential) is
        ``SinkMisconfigured``; anything else (unreachable, throttled, 5xx) is ``SinkError``."""
        if isinstance(exc, ClientError) and _client_error_code(exc) in _MISCONFIGURED_CODES:
            return SinkMisconfigured(f"s3://{self._bucket}: {what}: {_client_error_code(exc)}")
        return SinkError(f"s3://{self._bucket}: {what}: {exc}")

    def _read_all(self) -> list[ChainedEvent]:
        batches: list[tuple[tuple[int, int], str]] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=f"{self._prefix}audit/"):
            for item in page.get("Contents", []):
                position = parse_batch_name(item["Key"])
                if position is not None:
                    batches.append((position, item["Key"]))
        events: list[ChainedEvent] = []
        for _, key in sorted(batches):
            body = self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
            events.extend(decode_batch(f"s3://{self._bucket}/{key}", body))
        return events


def _event_date(event: ChainedEvent) -> dt.date:
    try:
        return dt.datetime.fromisoformat(event.occurred_at).astimezone(dt.UTC).date()
    except ValueError:
        return dt.datetime.now(dt.UTC).date()


def make_aws_client(
    service: str,
    *,
    session: Any = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 3,
) -> Any:
    """A boto3 client for ``service`` with explicit connect/read timeouts and bounded retries."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        request_checksum_calculation="when_supported",
    )
    boto_session = session if session is not None else boto3.session.Session()
    return boto_session.client(service, region_name=region, endpoint_url=endpoint_url, config=config)
