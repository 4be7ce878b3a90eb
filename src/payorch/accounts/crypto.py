"""Envelope encryption of gateway credentials (``cryptography``'s AES-GCM; never home-made).

Each account's credentials are sealed under a data key of its own (AES-256-GCM, the account's
merchant and id as associated data, so a sealed blob cannot be moved to another row). The data key
is stored only wrapped by a master key: AWS KMS in production (:class:`KmsKeyWrapper`), a local key
file in the embedded mode (:class:`LocalKeyWrapper`). Each row names the master key that wrapped it,
so during a rotation rows wrapped by the old key and by the new one are both readable, and
re-wrapping (:meth:`KeyWrapper.rewrap`) touches only the small wrapped key, never the credentials.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from payorch.accounts.config import AccountsConfig, KmsConfig
from payorch.observability.aws_logs import guard_botocore_logs

log = logging.getLogger(__name__)

_NONCE_BYTES = 12
_LOCAL_KEY_ID = re.compile(r"^local:[0-9a-f]{16}$")


class KeyUnavailable(Exception):
    """The master key could not wrap or unwrap a data key (KMS unreachable or refusing, a missing
    key file). The message never carries key material."""


class SealingRefused(KeyUnavailable):
    """Production without KMS (and without ``allow_local_key``): nothing new is sealed."""


NO_KMS = (
    "production seals gateway credentials with AWS KMS, and none is configured: "
    "set PAYORCH_ACCOUNTS__KMS__KEY_ID (docs/routing.md)"
)


@dataclass(frozen=True, slots=True)
class Sealed:
    """What a row keeps of an account's credentials."""

    ciphertext: bytes
    wrapped_key: bytes
    wrap_key_id: str


class KeyWrapper(Protocol):
    async def current_key_id(self) -> str:
        """The master key new data keys are wrapped with."""
        ...

    async def wrap(self, data_key: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        """``(key id, wrapped data key)`` under the current master key."""
        ...

    async def unwrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        """The data key ``key_id`` wrapped; raises :class:`KeyUnavailable`."""
        ...

    async def rewrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        """The same data key wrapped by the current master key."""
        ...


def _aad(context: dict[str, str]) -> bytes:
    return "/".join(f"{k}={context[k]}" for k in sorted(context)).encode()


def _encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError):
        raise KeyUnavailable("the sealed value does not open with its key") from None


async def seal(wrapper: KeyWrapper, plaintext: bytes, context: dict[str, str]) -> Sealed:
    """Seal ``plaintext`` under a fresh data key wrapped by the current master key."""
    data_key = AESGCM.generate_key(bit_length=256)
    key_id, wrapped = await wrapper.wrap(data_key, context)
    return Sealed(_encrypt(data_key, plaintext, _aad(context)), wrapped, key_id)


async def unseal(wrapper: KeyWrapper, sealed: Sealed, context: dict[str, str]) -> bytes:
    data_key = await wrapper.unwrap(sealed.wrap_key_id, sealed.wrapped_key, context)
    return _decrypt(data_key, sealed.ciphertext, _aad(context))


def fingerprint(secret_values: list[str]) -> str:
    """A short stable identifier of credentials, safe to show: not reversible to the secret."""
    digest = hashlib.sha256(b"payorch-credentials\x00" + "\x00".join(secret_values).encode()).hexdigest()
    return f"fp_{digest[:16]}"


class LocalKeyWrapper:
    """Master keys in files of a directory (0600 files, 0700 directory): ``<id>.key`` holds 32 random
    bytes, ``CURRENT`` names the one new data keys are wrapped with. Older keys stay, so rows wrapped
    by them stay readable until they are re-wrapped."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._keys: dict[str, bytes] = {}

    async def current_key_id(self) -> str:
        return await asyncio.to_thread(self._current)

    async def wrap(self, data_key: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        key_id = await self.current_key_id()
        master = await asyncio.to_thread(self._key, key_id)
        return key_id, _encrypt(master, data_key, _aad(context))

    async def unwrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        master = await asyncio.to_thread(self._key, key_id)
        return _decrypt(master, wrapped, _aad(context))

    async def rewrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        return await self.wrap(await self.unwrap(key_id, wrapped, context), context)

    def new_key(self) -> str:
        """Make a new master key and make it current (the rotation's first step)."""
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key_id = f"local:{secrets.token_hex(8)}"
        _write_private(self._file(key_id), os.urandom(32))
        _write_private(self._directory / "CURRENT", key_id.encode())
        return key_id

    def _current(self) -> str:
        try:
            key_id = (self._directory / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return self.new_key()
        except OSError as error:
            raise KeyUnavailable(f"the local master key cannot be read: {error.strerror}") from None
        if not _LOCAL_KEY_ID.match(key_id):
            raise KeyUnavailable("the local CURRENT file names no key")
        return key_id

    def _file(self, key_id: str) -> Path:
        return self._directory / f"{key_id.removeprefix('local:')}.key"

    def _key(self, key_id: str) -> bytes:
        cached = self._keys.get(key_id)
        if cached is not None:
            return cached
        if not _LOCAL_KEY_ID.match(key_id):
            raise KeyUnavailable(f"{key_id!r} is not a local master key")
        try:
            key = self._file(key_id).read_bytes()
        except OSError as error:
            raise KeyUnavailable(f"local master key {key_id} cannot be read: {error.strerror}") from None
        if len(key) != 32:
            raise KeyUnavailable(f"local master key {key_id} is damaged")
        self._keys[key_id] = key
        return key


def _write_private(path: Path, content: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class KmsKeyWrapper:
    """AWS KMS through boto3: each data key is wrapped with ``Encrypt`` under ``key_id`` and an
    encryption context naming the account (which CloudTrail records with every use). boto3 blocks,
    so every call runs on a worker thread, with the client's connect and read timeouts."""

    def __init__(self, client: Any, key_id: str) -> None:
        self._client = client
        self._key_id = key_id

    async def current_key_id(self) -> str:
        return self._key_id

    async def wrap(self, data_key: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        response = await self._call("Encrypt", KeyId=self._key_id, Plaintext=data_key, EncryptionContext=context)
        return self._key_id, bytes(response["CiphertextBlob"])

    async def unwrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        response = await self._call("Decrypt", KeyId=key_id, CiphertextBlob=wrapped, EncryptionContext=context)
        return bytes(response["Plaintext"])

    async def rewrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        # ReEncrypt: the data key never leaves KMS in the clear.
        response = await self._call(
            "ReEncrypt",
            CiphertextBlob=wrapped,
            SourceKeyId=key_id,
            SourceEncryptionContext=context,
            DestinationKeyId=self._key_id,
            DestinationEncryptionContext=context,
        )
        return self._key_id, bytes(response["CiphertextBlob"])

    async def _call(self, operation: str, **params: Any) -> Any:
        return await asyncio.to_thread(self._call_sync, operation, params)

    def _call_sync(self, operation: str, params: dict[str, Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        method = {"Encrypt": "encrypt", "Decrypt": "decrypt", "ReEncrypt": "re_encrypt"}[operation]
        try:
            return getattr(self._client, method)(**params)
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "Unknown"))
            raise KeyUnavailable(f"KMS refused {operation}: {code}") from None
        except BotoCoreError as error:
            raise KeyUnavailable(f"KMS unavailable for {operation}: {type(error).__name__}") from None


def make_kms_client(config: KmsConfig) -> Any:
    """A KMS client with explicit connect and read timeouts and a bounded retry budget."""
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
    return session.client("kms", endpoint_url=config.endpoint_url, config=boto_config)


class OpenOnlyKeyWrapper:
    """Production without KMS: data keys a local key wrapped before still open, so those accounts
    keep charging; no data key is wrapped anew, so no new credential rests under a key file."""

    def __init__(self, local: LocalKeyWrapper) -> None:
        self._local = local

    async def current_key_id(self) -> str:
        raise SealingRefused(NO_KMS)

    async def wrap(self, data_key: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        del data_key, context
        raise SealingRefused(NO_KMS)

    async def unwrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> bytes:
        return await self._local.unwrap(key_id, wrapped, context)

    async def rewrap(self, key_id: str, wrapped: bytes, context: dict[str, str]) -> tuple[str, bytes]:
        del key_id, wrapped, context
        raise SealingRefused(NO_KMS)


def build_key_wrapper(config: AccountsConfig, data_dir: Path, *, production: bool) -> KeyWrapper:
    """KMS when configured; else the local key, which production uses only when told to."""
    if config.kms is not None:
        return KmsKeyWrapper(make_kms_client(config.kms), config.kms.key_id)
    local = LocalKeyWrapper(config.local_key_directory or data_dir / "account_keys")
    if not production:
        return local
    if not config.allow_local_key:
        log.warning("merchants cannot connect gateway accounts or change their credentials: %s", NO_KMS)
        return OpenOnlyKeyWrapper(local)
    log.warning("gateway credentials are sealed with a local key file (PAYORCH_ACCOUNTS__ALLOW_LOCAL_KEY): "
                "not for production")  # fmt: skip
    return local
