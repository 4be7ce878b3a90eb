"""Inbound gateway notifications: no API key; each gateway's own signature is the authentication."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel

from payorch.api.deps import RuntimeDep
from payorch.gateways.registry import notifying_plugins
from payorch.payments.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1/gateway_webhooks", tags=["gateway webhooks"])


_NOTIFYING = notifying_plugins()


class NotificationReceived(BaseModel):
    object: Literal["gateway_notification"] = "gateway_notification"
    gateway: str
    event_id: str
    kind: str
    outcome: str


@router.post(
    "/{gateway}",
    operation_id="receive_gateway_notification",
    response_model=NotificationReceived,
    summary=f"Receive a gateway's notification ({', '.join(plugin.title for plugin in _NOTIFYING)})",
    description="Verified with the gateway's own scheme ("
    + ", ".join(str(plugin.notification_scheme) for plugin in _NOTIFYING)
    + "), deduplicated by the gateway's event id, and applied through the charge state machine. "
    "Unverifiable: 400, and nothing changes.",
    responses={
        400: {
            "model": ErrorEnvelope,
            "description": "Signature missing, wrong or stale (signature_verification_failed), or a verified "
            "notification with a field that cannot be stored (notification_invalid: too long, a control "
            "character, not valid Unicode); nothing is stored",
        },
        404: {"model": ErrorEnvelope, "description": "No gateway of that name is configured"},
        413: {"model": ErrorEnvelope, "description": "Request body too large"},
        415: {"model": ErrorEnvelope, "description": "Neither JSON nor a form body"},
        429: {"model": ErrorEnvelope, "description": "Rate limited (rate_limit_error)"},
        500: {"model": ErrorEnvelope, "description": "Internal error (api_error): the gateway retries"},
    },
)
async def receive(gateway: str, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    received = await runtime.webhooks.inbound.receive(gateway, dict(request.headers), await request.body())
    return {
        "object": "gateway_notification",
        "gateway": gateway,
        "event_id": received.event_id,
        "kind": received.kind,
        "outcome": received.outcome,
    }
