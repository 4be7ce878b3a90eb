"""HTTP for webhook endpoints and their deliveries: parse, call the service, render."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from payorch.api.deps import CurrentCaller, RuntimeDep
from payorch.api.errors import API_ERRORS
from payorch.payments.schemas import ErrorEnvelope
from payorch.webhooks.schemas import (
    RotateSecret,
    WebhookDeliveryList,
    WebhookDeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointOut,
    render_delivery,
    render_endpoint,
)

router = APIRouter(prefix="/v1/webhook_endpoints", tags=["webhook endpoints"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such webhook endpoint (or delivery) for this key's mode"}
}


@router.post(
    "",
    operation_id="create_webhook_endpoint",
    status_code=201,
    response_model=WebhookEndpointOut,
    summary="Create a webhook endpoint",
    description="The signing secret (`whsec_...`) is in this response only. Live mode: https and a "
    "public address only.",
    responses=API_ERRORS,
)
async def create_endpoint(params: WebhookEndpointCreate, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    endpoint, secret = await runtime.webhooks.endpoints.create(caller, params)
    return render_endpoint(endpoint, secret=secret)


@router.get(
    "",
    operation_id="list_webhook_endpoints",
    response_model=WebhookEndpointList,
    summary="List webhook endpoints, newest first",
    responses=API_ERRORS,
)
async def list_endpoints(request: Request, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    endpoints = await runtime.webhooks.endpoints.list_endpoints(caller)
    now = datetime.now(UTC)
    return {
        "object": "list",
        "url": request.url.path,
        "has_more": False,
        "data": [render_endpoint(e, now=now) for e in endpoints],
    }


@router.get(
    "/{endpoint_id}",
    operation_id="retrieve_webhook_endpoint",
    response_model=WebhookEndpointOut,
    summary="Retrieve a webhook endpoint",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def get_endpoint(endpoint_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    endpoint = await runtime.webhooks.endpoints.get(caller, endpoint_id)
    return render_endpoint(endpoint, now=datetime.now(UTC))


@router.delete(
    "/{endpoint_id}",
    operation_id="delete_webhook_endpoint",
    response_model=WebhookEndpointOut,
    summary="Delete a webhook endpoint (its queued deliveries are canceled)",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def delete_endpoint(endpoint_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    endpoint = await runtime.webhooks.endpoints.delete(caller, endpoint_id)
    return render_endpoint(endpoint, now=datetime.now(UTC))


@router.post(
    "/{endpoint_id}/rotate_secret",
    operation_id="rotate_webhook_endpoint_secret",
    response_model=WebhookEndpointOut,
    summary="Rotate the signing secret",
    description="Returns the new secret once. Until `previous_secret_expires`, deliveries carry a "
    "signature with each secret.",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def rotate_secret(
    endpoint_id: str,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    params: Annotated[RotateSecret | None, Body()] = None,
) -> dict[str, Any]:
    endpoint, secret = await runtime.webhooks.endpoints.rotate_secret(caller, endpoint_id, params or RotateSecret())
    return render_endpoint(endpoint, secret=secret, now=datetime.now(UTC))


@router.get(
    "/{endpoint_id}/deliveries",
    operation_id="list_webhook_deliveries",
    response_model=WebhookDeliveryList,
    summary="List an endpoint's deliveries, newest first",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def list_deliveries(
    request: Request,
    endpoint_id: str,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    deliveries, has_more = await runtime.webhooks.endpoints.list_deliveries(caller, endpoint_id, limit=limit)
    return {
        "object": "list",
        "url": request.url.path,
        "has_more": has_more,
        "data": [render_delivery(d) for d in deliveries],
    }


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    operation_id="redeliver_webhook_delivery",
    response_model=WebhookDeliveryOut,
    summary="Redeliver now (same webhook-id), e.g. after it was dead-lettered",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def redeliver(endpoint_id: str, delivery_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    delivery = await runtime.webhooks.endpoints.redeliver(caller, endpoint_id, delivery_id)
    return render_delivery(delivery)
