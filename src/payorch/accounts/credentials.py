"""Credentials as a gateway package's own config model reads them: validated, serialised for
sealing, summarised (fingerprint, last 4) for answers. Never logged, never echoed back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from typing import Any

import orjson
from pydantic import SecretStr, ValidationError

from payorch.accounts.crypto import fingerprint
from payorch.errors import ApiError, InvalidRequest, NoGatewayAvailable
from payorch.gateways.base import Outcome, VerifiesCredentials
from payorch.gateways.config import GatewayConfig
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import PLUGINS, build_gateway, plugin_for

_NOT_CREDENTIALS = frozenset({"name", "kind", "timeout_ms"})
VERIFY_TIMEOUT_SECONDS = 10.0


class CredentialsRefused(InvalidRequest):
    code = "credentials_refused"


def kinds() -> list[str]:
    return [plugin.kind for plugin in PLUGINS]


def validate(
    kind: str, credentials: dict[str, Any], timeout_ms: int | None, allowed_base_urls: Collection[str]
) -> GatewayConfig:
    """The gateway package's config model over ``credentials``; a 400 naming the field otherwise."""
    try:
        plugin = plugin_for(kind)
    except ValueError:
        raise InvalidRequest(
            f"No gateway '{kind}': one of {', '.join(kinds())}.", param="gateway", code="gateway_unknown"
        ) from None
    for field in credentials:
        if field in _NOT_CREDENTIALS:
            raise InvalidRequest(
                f"'{field}' is not a credential: give it at the top level.", param=f"credentials.{field}"
            )
    try:
        config: GatewayConfig = plugin.config.model_validate(
            {**credentials, "name": "account", "kind": kind, "timeout_ms": timeout_ms}
        )
    except ValidationError as error:
        first = error.errors(include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "credentials"
        raise InvalidRequest(f"credentials.{where}: {first['msg']}.", param=f"credentials.{where}") from None
    base_url = getattr(config, "base_url", None)
    if base_url is not None and base_url not in allowed_base_urls:
        raise InvalidRequest(
            "credentials.base_url: this payorch does not let accounts choose their gateway host.",
            param="credentials.base_url",
        )
    return config


def sealable(config: GatewayConfig) -> bytes:
    """The credential fields that were given, secrets in the clear: only ever sealed, never kept."""
    values: dict[str, Any] = {}
    for field in sorted(config.model_fields_set - _NOT_CREDENTIALS):
        value = getattr(config, field)
        values[field] = value.get_secret_value() if isinstance(value, SecretStr) else value
    return orjson.dumps(values)


def summary(config: GatewayConfig) -> tuple[str, str]:
    """``(fingerprint, last 4 of the main secret)``: what answers show instead of the credentials."""
    secrets = [secret.get_secret_value() for _, secret in config.secrets()]
    main = secrets[0] if secrets else ""
    return fingerprint(secrets or [sealable(config).decode()]), main[-4:] if len(main) >= 8 else ""


async def verify(config: GatewayConfig, services: GatewayServices) -> None:
    """One cheap authenticated call; a refused key is a 400 that says so."""
    plugin = plugin_for(config.kind)
    if not plugin.capabilities.verify_credentials:
        raise InvalidRequest(f"{plugin.title} accounts cannot be verified.", param="verify", code="verify_unsupported")
    gateway = build_gateway(config, services)
    try:
        if not isinstance(gateway, VerifiesCredentials):  # pragma: no cover - the capability says it is
            raise InvalidRequest(f"{plugin.title} accounts cannot be verified.", param="verify")
        try:
            async with asyncio.timeout(VERIFY_TIMEOUT_SECONDS):
                result = await gateway.verify_credentials()
        except TimeoutError:
            raise _unavailable(plugin.title) from None
    finally:
        with contextlib.suppress(Exception):
            await gateway.aclose()
    if result.outcome is Outcome.APPROVED:
        return
    if result.code == "credentials_refused":
        raise CredentialsRefused(f"{plugin.title} refused these credentials.", param="credentials")
    raise _unavailable(plugin.title)


def _unavailable(title: str) -> ApiError:
    return NoGatewayAvailable(f"{title} could not be reached to verify the credentials; nothing was stored.")
