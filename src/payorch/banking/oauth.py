"""OAuth 2.0 authorization-code flow with PKCE (RFC 6749, RFC 7636) against one provider.

- ``new_state()`` is 256 random bits; only its SHA-256 is stored (``state_digest``).
- The PKCE verifier is 256 random bits, base64url (43 characters). It is stored *sealed*: XORed with
  HMAC-SHA256(key=state, "payorch pkce verifier"). The state itself is never stored, so a copy of the
  database alone cannot recover any verifier; the callback, which holds the state, unseals it.
- ``OAuthClient`` calls the token endpoint over httpx with a timeout and the configured client
  authentication, and turns every failure (4xx, 5xx, timeout, garbage) into ``TokenEndpointError``,
  whose message never contains a token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from payorch.audit.redaction import redact_text
from payorch.banking.config import OAuthProviderConfig

_SEAL_INFO = b"payorch pkce verifier"
_MAX_PROVIDER_TEXT = 200
_MAX_PROVIDER_INPUT = 4096
_MARKUP = re.compile(r"<[^>]*>?|&#?[0-9a-zA-Z]{1,10};")
# RFC 6749 allows only these in ``error`` and ``error_description``: printable ASCII but `"` and `\`.
_NOT_RFC6749 = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def new_state() -> str:
    """An unguessable, single-use ``state``: 32 random bytes, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def state_digest(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _pad(state: str) -> bytes:
    return hmac.new(state.encode(), _SEAL_INFO, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str
    sealed: bytes
    """The verifier's 32 bytes XOR the state-derived pad: what the database holds."""


def new_pkce(state: str) -> Pkce:
    raw = secrets.token_bytes(32)
    verifier = _b64url(raw)
    sealed = bytes(a ^ b for a, b in zip(raw, _pad(state), strict=True))
    return Pkce(verifier=verifier, challenge=s256_challenge(verifier), sealed=sealed)


def unseal_verifier(state: str, sealed: bytes) -> str:
    return _b64url(bytes(a ^ b for a, b in zip(sealed, _pad(state), strict=True)))


def s256_challenge(verifier: str) -> str:
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def authorize_url(provider: OAuthProviderConfig, *, state: str, challenge: str) -> str:
    """The provider's authorization URL for one link (the browser goes here)."""
    params = {
        "response_type": "code",
        "client_id": provider.client_id,
        "redirect_uri": provider.redirect_uri,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if provider.scopes:
        params["scope"] = " ".join(provider.scopes)
    return str(httpx.URL(provider.authorize_url).copy_merge_params(params))


def provider_text(value: str | None) -> str | None:
    """A provider-supplied string made safe to store and show: markup (tags, entities) and control
    characters dropped, only the characters RFC 6749 allows there kept, card numbers and
    credentials redacted, at most 200 characters. It reaches us through a browser redirect, so
    anyone can write it."""
    if value is None:
        return None
    text = _MARKUP.sub(" ", value[:_MAX_PROVIDER_INPUT])
    text = _NOT_RFC6749.sub(" ", text).replace("<", " ").replace(">", " ")
    text = " ".join(redact_text(" ".join(text.split())).split())
    if len(text) > _MAX_PROVIDER_TEXT:
        text = text[: _MAX_PROVIDER_TEXT - 3].rstrip() + "..."
    return text or None


FailureKind = Literal["rejected", "unavailable", "invalid_response", "no_refresh_token"]


class TokenEndpointError(Exception):
    """The token endpoint did not give us usable tokens. ``kind`` says whether retrying could help:
    ``rejected`` (4xx: the code or refresh token is dead) never; ``unavailable`` (5xx, timeout,
    connection) maybe; ``invalid_response`` and ``no_refresh_token`` are the provider's bugs."""

    def __init__(self, kind: FailureKind, message: str, *, oauth_error: str | None = None) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.oauth_error = oauth_error


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: SecretStr
    refresh_token: SecretStr | None
    token_type: str
    expires_in: int | None
    scope: str | None

    def __repr__(self) -> str:  # dataclass repr would be safe (SecretStr), but say so explicitly
        return f"TokenSet(token_type={self.token_type!r}, expires_in={self.expires_in!r}, scope={self.scope!r})"


class OAuthClient:
    """The token endpoint of one provider. ``http`` is built in the Runtime and closed there."""

    def __init__(self, provider: OAuthProviderConfig, http: httpx.AsyncClient) -> None:
        self._provider = provider
        self._http = http

    @staticmethod
    def build_http(provider: OAuthProviderConfig) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(provider.token_timeout_seconds),
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def exchange_code(self, code: str, verifier: str) -> TokenSet:
        """Redeem an authorization code; the answer must carry a refresh token."""
        tokens = await self._token_request(
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": self._provider.redirect_uri,
                "code_verifier": verifier,
            }
        )
        if tokens.refresh_token is None:
            raise TokenEndpointError("no_refresh_token", "The provider issued no refresh token.")
        return tokens

    async def refresh(self, refresh_token: SecretStr) -> TokenSet:
        """Trade a refresh token for an access token (and, with rotation, a new refresh token)."""
        return await self._token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token.get_secret_value()}
        )

    async def _token_request(self, form: dict[str, str]) -> TokenSet:
        provider = self._provider
        secret = provider.client_secret.get_secret_value()
        headers: dict[str, str] = {}
        if provider.client_auth_method == "client_secret_basic":
            # RFC 6749 2.3.1: both parts form-urlencoded before the Basic encoding.
            pair = f"{quote(provider.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form = {**form, "client_id": provider.client_id, "client_secret": secret}
        try:
            response = await self._http.post(provider.token_url, data=form, headers=headers)
        except httpx.TimeoutException:
            raise TokenEndpointError("unavailable", "The token endpoint did not answer in time.") from None
        except httpx.HTTPError as exc:
            raise TokenEndpointError(
                "unavailable", f"The token endpoint could not be reached ({type(exc).__name__})."
            ) from None
        return _parse_token_response(response)


def _parse_token_response(response: httpx.Response) -> TokenSet:
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if status >= 500 or status == 429:
        raise TokenEndpointError("unavailable", f"The token endpoint answered HTTP {status}.")
    if status != 200:
        oauth_error = (
            provider_text(body.get("error")) if isinstance(body, dict) and isinstance(body.get("error"), str) else None
        )
        detail = f": {oauth_error}" if oauth_error else ""
        kind: FailureKind = "rejected" if 400 <= status < 500 else "invalid_response"
        raise TokenEndpointError(kind, f"The token endpoint answered HTTP {status}{detail}.", oauth_error=oauth_error)
    if not isinstance(body, dict):
        raise TokenEndpointError("invalid_response", "The token endpoint answered something other than a JSON object.")
    access, refresh = body.get("access_token"), body.get("refresh_token")
    token_type, expires_in, scope = body.get("token_type"), body.get("expires_in"), body.get("scope")
    if not isinstance(access, str) or not access:
        raise TokenEndpointError("invalid_response", "The token endpoint's answer has no access_token.")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenEndpointError("invalid_response", "The token endpoint's answer has no bearer token_type.")
    if refresh is not None and (not isinstance(refresh, str) or not refresh):
        raise TokenEndpointError("invalid_response", "The token endpoint's refresh_token is not a string.")
    if expires_in is not None and (isinstance(expires_in, bool) or not isinstance(expires_in, int)):
        raise TokenEndpointError("invalid_response", "The token endpoint's expires_in is not an integer.")
    return TokenSet(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh) if refresh else None,
        token_type="Bearer",  # noqa: S106 - the token type, not a secret
        expires_in=expires_in,
        scope=provider_text(scope) if isinstance(scope, str) else None,
    )
