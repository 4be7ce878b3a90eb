"""HTTP for refunds: parse, call the service, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from payorch.api.charges import COMMON_ERRORS
from payorch.api.deps import CurrentCaller, IdempotencyKey, RuntimeDep, reply_response
from payorch.api.errors import request_id_of
from payorch.payments.refund_create import RefundCreate
from payorch.payments.refunds import RefundOut, render_refund
from payorch.payments.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1/refunds", tags=["refunds"])


@router.post(
    "",
    operation_id="create_refund",
    status_code=201,
    response_model=RefundOut,
    summary="Refund all or part of a captured charge",
    responses={
        **COMMON_ERRORS,
        201: {"model": RefundOut, "description": "Refund succeeded"},
        202: {
            "model": RefundOut,
            "description": "The gateway's answer was lost (processing): the refund is sent again with the same "
            "gateway idempotency key until it is known; final state by GET",
        },
        400: {
            "model": ErrorEnvelope,
            "description": "Invalid request (invalid_request_error: resource_missing, amount_too_large, "
            "charge_not_captured, charge_not_refundable, charge_already_refunded; idempotency_error)",
        },
        402: {"model": ErrorEnvelope, "description": "The gateway refused the refund (gateway_refused)"},
        409: {"model": ErrorEnvelope, "description": "A request with this Idempotency-Key is still running"},
        503: {"model": ErrorEnvelope, "description": "The gateway could not be reached; nothing was refunded"},
    },
)
async def create_refund(
    request: Request,
    params: RefundCreate,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    reply = await runtime.refunds.create(
        caller,
        params,
        request_id=request_id_of(request),
        idempotency_key=idempotency_key,
        raw_body=await request.json(),
        path=request.url.path,
    )
    return reply_response(reply)


@router.get(
    "/{refund_id}",
    operation_id="retrieve_refund",
    response_model=RefundOut,
    summary="Retrieve a refund",
    responses={**COMMON_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such refund"}},
)
async def get_refund(refund_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return render_refund(await runtime.refunds.get(caller, refund_id))
