"""Bank linking settings, nested in ``Settings`` as ``banking`` (``PAYORCH_BANKING__PROVIDER__CLIENT_ID=...``).

With no provider configured the bank link routes answer 503 ``bank_linking_not_configured``. The
secrets store is AWS Secrets Manager when ``secrets.aws`` is set, else a local directory of 0600
files (the embedded mode; refused in production).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

from payorch.audit.config import AwsClientConfig

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.fragment:
        raise ValueError("must not carry a fragment")
    return value


class OAuthProviderConfig(BaseModel):
    """One OAuth 2.0 authorization server (a Plaid-like banking data provider)."""

    authorize_url: str
    token_url: str
    client_id: str = Field(min_length=1, max_length=255)
    client_secret: SecretStr
    scopes: list[str] = Field(default_factory=list)
    redirect_uri: str
    """payorch's own callback as registered with the provider: ``https://<host>/v1/bank_links/callback``."""
    client_auth_method: ClientAuthMethod = "client_secret_basic"
    success_url: str
    """Where the browser goes after a completed link, with ``?bank_link=bl_...`` added."""
    failure_url: str
    """Where the browser goes after a failed link, with ``?bank_link=bl_...&error=<code>`` added."""
    state_ttl_minutes: int = Field(default=10, ge=1, le=60)
    token_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    """Connect, read, write and pool timeout of each token endpoint call."""

    @field_validator("authorize_url", "token_url", "redirect_uri", "success_url", "failure_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, scopes: list[str]) -> list[str]:
        # RFC 6749 3.3: scope tokens are printable ASCII without space, quote or backslash.
        for scope in scopes:
            if not scope or any(c in ' "\\' or not 0x21 <= ord(c) <= 0x7E for c in scope):
                raise ValueError(f"invalid scope token {scope!r}")
        return scopes

    def insecure_urls(self) -> list[str]:
        """The URLs that are not https (refused in production)."""
        urls = (self.authorize_url, self.token_url, self.redirect_uri, self.success_url, self.failure_url)
        return [url for url in urls if urlsplit(url).scheme != "https"]


class AwsSecretsConfig(AwsClientConfig):
    """AWS Secrets Manager. Credentials come from the default boto3 chain (instance role, environment)
    unless given here."""

    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    kms_key_id: str | None = None
    """A customer managed KMS key for the secrets; default: the account's ``aws/secretsmanager`` key."""


class SecretsConfig(BaseModel):
    aws: AwsSecretsConfig | None = None
    local_directory: Path | None = None
    """The embedded store; default ``<data_dir>/secrets``."""
    name_prefix: str = Field(default="payorch", pattern=r"^[A-Za-z0-9_+=.@-]{1,64}$")
    """Secret names are ``<prefix>/<merchant id>/bank_links/<link id>/refresh_token``."""

    @property
    def backend(self) -> Literal["aws", "local"]:
        return "aws" if self.aws is not None else "local"


class BankingConfig(BaseModel):
    provider: OAuthProviderConfig | None = None
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    refresh_lease_seconds: float = Field(default=60.0, gt=0, le=600)
    """How long one refresh holds a link against a concurrent refresh (the provider rotates refresh
    tokens, so two refreshes of one link must not overlap)."""

    def production_problems(self) -> list[str]:
        """Why these settings are unfit for production (empty when they are fit)."""
        provider = self.provider
        if provider is None:
            return []
        problems = []
        secret = provider.client_secret.get_secret_value().lower()
        if not secret or any(word in secret for word in ("changeme", "placeholder", "example", "xxx")):
            problems.append("banking.provider: placeholder client secret refused in production")
        if provider.insecure_urls():
            problems.append(f"banking.provider: https required in production: {provider.insecure_urls()}")
        if self.secrets.aws is None:
            problems.append("banking: production keeps refresh tokens in AWS Secrets Manager (banking.secrets.aws)")
        return problems
