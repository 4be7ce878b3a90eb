"""Webhook settings, nested in ``Settings`` as ``webhooks`` (``PAYORCH_WEBHOOKS__DELIVERY_TIMEOUT_SECONDS=...``)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

MIN_RETRY_WINDOW_HOURS = 24.0


class WebhooksConfig(BaseModel):
    secret_key: SecretStr | None = None
    """Fernet key(s) that encrypt endpoint signing secrets at rest, comma-separated, newest first (the
    older ones only decrypt, for key rotation). Unset outside production: a 0600 key file under
    ``data_dir`` is made on first use. Production refuses to start without it."""
    listen: bool = True
    """LISTEN for the triggers' NOTIFY. Off, deliveries still go out by polling every ``poll_interval_seconds``."""
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    batch_size: int = Field(default=50, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=256)
    """Deliveries sent at once by one dispatcher."""
    delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    """Whole-request timeout of one delivery (connect, write, read)."""
    lease_margin_seconds: float = Field(default=30.0, ge=0.5, le=3600)
    """A claimed delivery is leased for its timeout plus this margin: a dispatcher that dies mid-delivery
    delays it by at most that long; another dispatcher then sends it again (same ``webhook-id``)."""
    retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    retry_max_interval_seconds: float = Field(default=3600.0, gt=0, le=86_400)
    retry_window_hours: float = Field(default=72.0, ge=MIN_RETRY_WINDOW_HOURS, le=24 * 30)
    """A delivery is retried with exponential backoff and jitter for this long, then dead-lettered."""
    secret_overlap_hours: float = Field(default=24.0, ge=0, le=24 * 7)
    """After a rotation, the previous secret keeps signing alongside the new one for this long (default)."""
    max_endpoints_per_mode: int = Field(default=16, ge=1, le=1000)
    allow_loopback_endpoints: bool = False
    """Development only: endpoints on this machine (``127.0.0.1``, ``::1``, ``localhost``) may receive
    webhooks, for local tools. Private, link-local and metadata addresses stay refused. Production
    refuses to start with it on."""
    resolve_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    """How long resolving an endpoint's host may take (at creation and at each connect)."""
    reconnect_max_seconds: float = Field(default=30.0, gt=0, le=600)
