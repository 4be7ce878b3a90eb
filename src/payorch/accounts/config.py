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
    """Wrap data keys with AWS KMS. Unset: with a local key file, outside production; in production
    merchants' accounts are then refused (503 ``kms_not_configured``) unless ``allow_local_key``."""
    allow_local_key: bool = False
    """Production without KMS: seal credentials with the local key file anyway. Not for production:
    the key then sits on the same hosts and backups as what it protects, and no service logs its use.
    For trying a production set-up on one machine."""
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

    def production_problems(self) -> list[str]:
        """Why these settings are unfit for production (empty when they are fit). No KMS at all is
        not one: a payorch whose merchants use only the platform's accounts needs none, and the
        runtime says at start that accounts cannot be connected without it."""
        if self.kms is None and self.local_key_directory is not None and not self.allow_local_key:
            return [
                "accounts.local_key_directory is set, but production seals gateway credentials with AWS KMS: "
                "set PAYORCH_ACCOUNTS__KMS__KEY_ID, or PAYORCH_ACCOUNTS__ALLOW_LOCAL_KEY=true to use the local "
                "key anyway (not for production)"
            ]
        return []
