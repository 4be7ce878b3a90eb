"""What production says at start about sealing merchants' gateway credentials (docs/routing.md)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet

from payorch.settings import Settings


def production(**accounts: Any) -> Settings:
    return Settings(
        environment="production",
        database_url="postgresql+asyncpg://u@db/p",
        webhooks={"secret_key": Fernet.generate_key().decode()},
        accounts=accounts,
    )


def test_a_local_key_directory_in_production_without_the_opt_in_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match=r"PAYORCH_ACCOUNTS__KMS__KEY_ID.*PAYORCH_ACCOUNTS__ALLOW_LOCAL_KEY"):
        production(local_key_directory="/var/lib/payorch/keys")


def test_production_starts_with_kms_with_the_opt_in_or_with_neither() -> None:
    kms = {"key_id": "alias/payorch-accounts", "region": "eu-west-1"}
    assert production(kms=kms, local_key_directory="/var/lib/payorch/keys").accounts.kms is not None
    assert production(allow_local_key=True, local_key_directory="/var/lib/payorch/keys").accounts.allow_local_key
    # No KMS at all: merchants' accounts are refused when asked for (503), the platform's still work.
    assert production().accounts.kms is None


def test_outside_production_the_local_key_needs_no_opt_in() -> None:
    settings = Settings(environment="development", accounts={"local_key_directory": "/tmp/keys"})  # noqa: S108
    assert not settings.accounts.allow_local_key
