"""The accounts package's settings, nested in ``Settings`` as ``accounts`` (``PAYORCH_ACCOUNTS__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from payorch.audit.config import AwsClientConfig


class KmsConfig(AwsClientConfig):
    """AWS KMS wraps each account's data key (production)."""

    key_id: str = Field(min_length=1)
    """The key new data keys are wrapped with (key id, ARN or alias)."""
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    """Unset: boto3's own credential chain (an instance or task role)."""


class PlatformFee(BaseModel):
    percent_bps: int = Field(default=0, ge=0, le=10_000)
    fixed: int = Field(default=0, ge=0)


class AccountsConfig(BaseModel):
    """Gateway accounts (docs/routing.md)."""

    kms: KmsConfig | None = None
    """Wrap data keys with AWS KMS; unset: with a local key file (the embedded mode; refused in production)."""
    local_key_directory: Path | None = None
    """Where the local master keys live (0600 files); unset: ``<data_dir>/account_keys``."""
    cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    """How long a process trusts its cached view of a merchant's accounts and routing without
    re-reading it. Changes made anywhere reach every process at once through a notification; this
    bounds how stale a view can be if a notification is lost."""
    allowed_base_urls: list[str] = Field(default_factory=list)
    """Gateway hosts a merchant's account may name as ``base_url`` (emulators in development and
    tests). Empty: an account's ``base_url`` is refused, so a merchant cannot point payorch's
    authenticated calls at a host of its choosing."""
    platform_fees: dict[str, dict[str, PlatformFee]] = Field(default_factory=dict)
    """The platform accounts' fees for ``least_cost``: account name -> currency -> fee."""
    success_rate_window_seconds: int = Field(default=900, ge=60, le=86_400)
    """``success_rate`` counts each account's outcomes over this sliding window."""
    success_rate_exploration: float = Field(default=0.05, ge=0, le=0.5)
    """The exploration floor: this share of ``success_rate`` charges try a random account first,
    so an account that recovered is seen to have recovered."""
