"""Where refresh tokens live (DESIGN.md section 10): AWS Secrets Manager, or a local directory of
0600 files in the embedded mode. The database holds only a secret's name and version id.

Every write carries a ``request_token`` (32-64 characters) that makes it idempotent: a retried write
with the same token and value is a no-op that returns the same version. Secret values are JSON
``{"refresh_token": "..."}`` and are returned as ``SecretStr``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr

from payorch.banking.config import AwsSecretsConfig, SecretsConfig
from payorch.observability.aws_logs import guard_botocore_logs

_NAME = re.compile(r"^[A-Za-z0-9_+=.@-]{1,128}(/[A-Za-z0-9_+=.@-]{1,128}){0,7}$")
_TOKEN = re.compile(r"^[A-Za-z0-9-]{32,64}$")


class SecretsStoreError(Exception):
    """The store could not read or write a secret. The message never carries a secret value."""


class SecretNotFound(SecretsStoreError):
    pass


class SecretsStore(Protocol):
    async def put(self, name: str, value: SecretStr, *, request_token: str) -> str:
        """Store ``value`` as the current version of ``name`` (creating it); returns the version id."""
        ...

    async def get(self, name: str) -> SecretStr:
        """The current version's value. Raises ``SecretNotFound`` or ``SecretsStoreError``."""
        ...


def secret_name(prefix: str, merchant_id: str, link_id: str) -> str:
    return f"{prefix}/{merchant_id}/bank_links/{link_id}/refresh_token"


def _check(name: str, request_token: str | None = None) -> None:
    if not _NAME.match(name) or any(part in (".", "..") for part in name.split("/")):
        raise ValueError(f"invalid secret name {name!r}")
    if request_token is not None and not _TOKEN.match(request_token):
        raise ValueError("request_token must be 32-64 letters, digits or dashes")


def _encode(value: SecretStr) -> str:
    return json.dumps({"refresh_token": value.get_secret_value()})


def _decode(text: str) -> SecretStr:
    try:
        token = json.loads(text)["refresh_token"]
    except (ValueError, KeyError, TypeError):
        raise SecretsStoreError("the stored secret is not in the expected format") from None
    if not isinstance(token, str):
        raise SecretsStoreError("the stored secret is not in the expected format")
    return SecretStr(token)


class AwsSecretsManagerStore:
    """AWS Secrets Manager through boto3. boto3 blocks, so every call runs on a worker thread; the
    client (explicit timeouts, bounded retries) is made by :func:`make_secretsmanager_client`."""

    def __init__(self, client: Any, *, kms_key_id: str | None = None) -> None:
        self._client = client
        self._kms_key_id = kms_key_id

    async def put(self, name: str, value: SecretStr, *, request_token: str) -> str:
        _check(name, request_token)
        return await asyncio.to_thread(self._put, name, value, request_token)

    def _put(self, name: str, value: SecretStr, request_token: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        payload = _encode(value)
        try:
            try:
                extra = {"KmsKeyId": self._kms_key_id} if self._kms_key_id else {}
                response = self._client.create_secret(
                    Name=name, SecretString=payload, ClientRequestToken=request_token, **extra
                )
            except ClientError as exc:
                if _code(exc) != "ResourceExistsException":
                    raise
                # The secret exists: add a version (a repeat of this very version is a no-op).
                response = self._client.put_secret_value(
                    SecretId=name, SecretString=payload, ClientRequestToken=request_token
                )
        except ClientError as exc:
            raise SecretsStoreError(f"Secrets Manager refused to store {name}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise SecretsStoreError(f"Secrets Manager unavailable storing {name}: {type(exc).__name__}") from None
        return str(response["VersionId"])

    async def get(self, name: str) -> SecretStr:
        _check(name)
        return await asyncio.to_thread(self._get, name)

    def _get(self, name: str) -> SecretStr:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise SecretNotFound(f"no secret {name}") from None
            raise SecretsStoreError(f"Secrets Manager refused to read {name}: {_code(exc)}") from None
        except BotoCoreError as exc:
            raise SecretsStoreError(f"Secrets Manager unavailable reading {name}: {type(exc).__name__}") from None
        return _decode(str(response.get("SecretString", "")))


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def make_secretsmanager_client(config: AwsSecretsConfig) -> Any:
    """A Secrets Manager client with explicit connect/read timeouts and a bounded retry budget."""
    guard_botocore_logs()
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    session = boto3.session.Session(
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key.get_secret_value() if config.secret_access_key else None,
        region_name=config.region,
    )
    boto_config = Config(
        connect_timeout=config.connect_timeout_seconds,
        read_timeout=config.read_timeout_seconds,
        retries={"max_attempts": config.max_attempts, "mode": "standard"},
    )
    return session.client("secretsmanager", endpoint_url=config.endpoint_url, config=boto_config)


class LocalSecretsStore:
    """The embedded mode's store: ``<root>/<name>/<version>.json`` files (0600, directories 0700) and a
    ``CURRENT`` file naming the current version. Every file is written to a temporary file, fsynced
    and renamed into place, so a reader sees the old or the new content, never a torn one. The
    version id is the request token; the previous version is kept, older ones are deleted."""

    def __init__(self, root: Path) -> None:
        self._root = root

    async def put(self, name: str, value: SecretStr, *, request_token: str) -> str:
        _check(name, request_token)
        return await asyncio.to_thread(self._put, name, value, request_token)

    async def get(self, name: str) -> SecretStr:
        _check(name)
        return await asyncio.to_thread(self._get, name)

    def _dir(self, name: str) -> Path:
        return self._root.joinpath(*name.split("/"))

    def _put(self, name: str, value: SecretStr, request_token: str) -> str:
        directory = self._dir(name)
        try:
            self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            version_file = directory / f"{request_token}.json"
            payload = _encode(value)
            if version_file.exists():
                if version_file.read_text() != payload:
                    raise SecretsStoreError(f"request token already used for another value of {name}")
            else:
                _atomic_write(version_file, payload)
            previous = _read_current(directory)
            if previous != request_token:
                _atomic_write(directory / "PREVIOUS", previous or "")
                _atomic_write(directory / "CURRENT", request_token)
                keep = {f"{request_token}.json", f"{previous}.json"}
                for stale in directory.glob("*.json"):
                    if stale.name not in keep:
                        stale.unlink(missing_ok=True)
        except OSError as exc:
            raise SecretsStoreError(f"local secrets store could not write {name}: {exc.strerror}") from None
        return request_token

    def _get(self, name: str) -> SecretStr:
        directory = self._dir(name)
        try:
            current = _read_current(directory)
            if current is None:
                raise SecretNotFound(f"no secret {name}")
            return _decode((directory / f"{current}.json").read_text())
        except FileNotFoundError:
            raise SecretNotFound(f"no secret {name}") from None
        except OSError as exc:
            raise SecretsStoreError(f"local secrets store could not read {name}: {exc.strerror}") from None


def _read_current(directory: Path) -> str | None:
    try:
        current = (directory / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return None
    return current or None


def _atomic_write(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # created 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def build_secrets_store(config: SecretsConfig, data_dir: Path) -> SecretsStore:
    """The configured store: Secrets Manager when ``config.aws`` is set, else the local directory."""
    if config.aws is not None:
        return AwsSecretsManagerStore(make_secretsmanager_client(config.aws), kms_key_id=config.aws.kms_key_id)
    return LocalSecretsStore(config.local_directory or data_dir / "secrets")
