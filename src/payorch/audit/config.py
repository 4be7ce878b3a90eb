"""Audit trail settings. The integrator nests ``AuditConfig`` in ``Settings`` as ``audit``
(``PAYORCH_AUDIT__S3__BUCKET=...``). With nothing configured the embedded mode ships to a local
read-only directory under ``data_dir``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

# "payorch audit shipper" folded into a signed 64-bit advisory lock key; any constant would do.
DEFAULT_LOCK_KEY = 0x7061796F72636861


class LocalSinkConfig(BaseModel):
    directory: Path | None = None
    """Default: ``<data_dir>/audit``."""


class AwsClientConfig(BaseModel):
    region: str | None = None
    endpoint_url: str | None = None
    """Only for emulators and tests (moto, the CloudTrail fake)."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    max_attempts: int = Field(default=3, ge=1, le=10)
    """botocore's retry budget per call; the shipper retries whole batches beyond that."""


class S3SinkConfig(AwsClientConfig):
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = ""
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    retention_days: int = Field(default=365, ge=1, le=36_500)


class CloudTrailSinkConfig(AwsClientConfig):
    channel_arn: str = Field(pattern=r"^arn:aws[a-z-]*:cloudtrail:[a-z0-9-]+:\d{12}:channel/[A-Za-z0-9._/-]+$")
    event_source: str = "payorch"
    failed_entry_attempts: int = Field(default=3, ge=1, le=10)


class RefusalAuditConfig(BaseModel):
    """The audit events of refused money actions and failed authentications (PCI DSS 10.2.1.2,
    10.2.1.4), each written in a short transaction of its own."""

    window_seconds: int = Field(default=60, ge=1, le=3600)
    """Failed authentications are counted per key prefix and client IP over windows this long: the
    first of a window is written at once, the rest as one summary event when the window closes."""
    keys_per_ip: int = Field(default=20, ge=1, le=10_000)
    """Distinct key prefixes counted apart per client IP and window; more (a flood of random keys)
    are counted together under the prefix ``*``."""
    flush_interval_seconds: float = Field(default=5.0, gt=0, le=600)
    """How often closed windows are looked for and their summaries written."""
    write_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    """Longest a refused request waits for its audit event (or the window in Redis); past it the
    event is logged and counted as lost (``payorch_audit_write_failures_total``), never a 500."""


class AuditConfig(BaseModel):
    local: LocalSinkConfig | None = None
    s3: S3SinkConfig | None = None
    cloudtrail: CloudTrailSinkConfig | None = None
    batch_size: int = Field(default=500, ge=1, le=10_000)
    """Most events per shipped batch (CloudTrail calls are split into 100s regardless)."""
    max_batch_age_seconds: float = Field(default=5.0, ge=0)
    """A partial batch is shipped once its oldest event has waited this long."""
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    backoff_initial_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=60.0, ge=0)
    sink_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    """Longest any one sink call (a check, a batch put) may take before it counts as failed and the
    sink backs off; a hanging sink never holds back chaining or the other sinks."""
    lock_key: int = DEFAULT_LOCK_KEY
    refusals: RefusalAuditConfig = Field(default_factory=RefusalAuditConfig)

    @model_validator(mode="after")
    def _local_by_default(self) -> AuditConfig:
        if self.local is None and self.s3 is None and self.cloudtrail is None:
            self.local = LocalSinkConfig()
        return self

    def sink_kinds(self) -> list[Literal["local", "s3", "cloudtrail"]]:
        kinds: list[Literal["local", "s3", "cloudtrail"]] = []
        if self.local is not None:
            kinds.append("local")
        if self.s3 is not None:
            kinds.append("s3")
        if self.cloudtrail is not None:
            kinds.append("cloudtrail")
        return kinds
