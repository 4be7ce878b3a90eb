"""Request and response models of the webhook endpoint API, and their renderers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from payorch.storage.webhooks import Delivery, Endpoint

EventType = Literal[
    "*",
    "charge.processing",
    "charge.requires_action",
    "charge.authentication_expired",
    "charge.authorized",
    "charge.succeeded",
    "charge.failed",
    "charge.captured",
    "charge.canceled",
    "charge.refunded",
    "charge.disputed",
    "refund.created",
    "refund.updated",
    "refund.succeeded",
    "refund.failed",
]

MAX_OVERLAP_SECONDS = 7 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookEndpointCreate(_Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description="Where events are POSTed. Live mode: https and a public address only."
    )
    enabled_events: list[EventType] = Field(
        min_length=1, max_length=32, description='Event types to send, or `["*"]` for all.'
    )
    description: Annotated[str, StringConstraints(max_length=500)] | None = None


class RotateSecret(_Strict):
    expires_in_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_OVERLAP_SECONDS,
        description="How long the previous secret keeps signing alongside the new one (default 24 hours).",
    )


class WebhookEndpointOut(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    enabled_events: list[str]
    description: str | None
    livemode: bool
    status: Literal["enabled"] = "enabled"
    created: int
    previous_secret_expires: int | None = Field(
        description="Until then deliveries are signed with the previous secret too (Unix seconds)."
    )
    secret: str | None = Field(
        default=None, description="The signing secret `whsec_...`: returned on creation and rotation only."
    )


class WebhookEndpointList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[WebhookEndpointOut]


class WebhookDeliveryOut(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    endpoint: str
    event: str
    status: Literal["pending", "succeeded", "failed", "canceled"] = Field(
        description="failed = dead-lettered after the retry window; redeliver by hand."
    )
    attempts: int
    next_attempt: int | None
    last_status_code: int | None
    last_error: str | None
    delivered: int | None
    created: int


class WebhookDeliveryList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[WebhookDeliveryOut]


def _unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def render_endpoint(endpoint: Endpoint, *, secret: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    expires = endpoint.previous_secret_expires_at
    if expires is not None and now is not None and expires <= now:
        expires = None
    return {
        "id": endpoint.id,
        "object": "webhook_endpoint",
        "url": endpoint.url,
        "enabled_events": endpoint.enabled_events,
        "description": endpoint.description,
        "livemode": endpoint.livemode,
        "status": "enabled",
        "created": int(endpoint.created_at.timestamp()),
        "previous_secret_expires": _unix(expires),
        "secret": secret,
    }


def render_delivery(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "object": "webhook_delivery",
        "endpoint": delivery.endpoint_id,
        "event": delivery.event_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt": _unix(delivery.next_attempt_at) if delivery.status == "pending" else None,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "delivered": _unix(delivery.delivered_at),
        "created": int(delivery.created_at.timestamp()),
    }
