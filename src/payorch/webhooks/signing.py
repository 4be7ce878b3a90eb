"""Standard Webhooks signatures (https://www.standardwebhooks.com) and endpoint secrets at rest.

A secret is ``whsec_`` + base64 of 32 random bytes. The signature is HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}`` with the decoded secret, sent as ``v1,<base64>``; during a
rotation's overlap the header carries one signature per live secret, space-separated.

Secrets must be recoverable to sign, so they are encrypted (Fernet: AES-128-CBC + HMAC-SHA256) with a
key from settings, never hashed, and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from payorch.keyfiles import read_or_create

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: one signature per live secret (two during a rotation)."""
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets_)


def headers(secrets_: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets_, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": "payorch-webhooks/1",
    }


class SecretBox:
    """Encrypts endpoint secrets at rest. The first key encrypts; every key decrypts (key rotation)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one webhook secret key is required")
        self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])

    @classmethod
    def from_setting(cls, value: str | None, key_file: Path) -> SecretBox:
        """The configured keys, or (outside production) a key file made once with mode 0600."""
        if value:
            return cls([k for k in value.split(",") if k.strip()])
        return cls([read_or_create(key_file, lambda: Fernet.generate_key().decode())])

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken as error:
            raise ValueError("webhook secret cannot be decrypted with the configured keys") from error
