"""Audit sinks and ``build_sinks``, which the Runtime calls once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from payorch.audit.config import AuditConfig
from payorch.audit.sinks.base import AuditSink, CorruptRecord, SinkError, SinkMisconfigured, SinkUnsupported
from payorch.audit.sinks.cloudtrail import CloudTrailLakeSink
from payorch.audit.sinks.local import LocalDirectorySink
from payorch.audit.sinks.s3 import S3ObjectLockSink, make_aws_client

__all__ = [
    "AuditSink",
    "CloudTrailLakeSink",
    "CorruptRecord",
    "LocalDirectorySink",
    "S3ObjectLockSink",
    "SinkError",
    "SinkMisconfigured",
    "SinkUnsupported",
    "build_sinks",
]


def build_sinks(config: AuditConfig, *, data_dir: Path, boto_session: Any = None) -> list[AuditSink]:
    """The configured sinks, clients built here with explicit timeouts. ``boto_session`` (a
    ``boto3.session.Session``) defaults to a new session on the standard credential chain."""
    sinks: list[AuditSink] = []
    if config.local is not None:
        sinks.append(LocalDirectorySink(config.local.directory or data_dir / "audit"))
    if config.s3 is not None:
        s3 = config.s3
        client = make_aws_client(
            "s3",
            session=boto_session,
            region=s3.region,
            endpoint_url=s3.endpoint_url,
            connect_timeout=s3.connect_timeout_seconds,
            read_timeout=s3.read_timeout_seconds,
            max_attempts=s3.max_attempts,
        )
        sinks.append(
            S3ObjectLockSink(
                client,
                s3.bucket,
                prefix=s3.prefix,
                lock_mode=s3.object_lock_mode,
                retention_days=s3.retention_days,
            )
        )
    if config.cloudtrail is not None:
        trail = config.cloudtrail
        client = make_aws_client(
            "cloudtrail-data",
            session=boto_session,
            region=trail.region,
            endpoint_url=trail.endpoint_url,
            connect_timeout=trail.connect_timeout_seconds,
            read_timeout=trail.read_timeout_seconds,
            max_attempts=trail.max_attempts,
        )
        sinks.append(
            CloudTrailLakeSink(
                client,
                trail.channel_arn,
                event_source=trail.event_source,
                failed_entry_attempts=trail.failed_entry_attempts,
            )
        )
    return sinks
