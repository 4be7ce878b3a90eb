"""HTTP for payment methods: parse, call the service, render."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from payorch.api.charges import COMMON_ERRORS
from payorch.api.deps import CurrentCaller, IdempotencyKey, RuntimeDep, reply_response
from payorch.api.errors import request_id_of
from payorch.payments.payment_methods import PaymentMethodCreate, PaymentMethodOut
from payorch.payments.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1/payment_methods", tags=["payment_methods"])


@router.post(
    "",
    operation_id="create_payment_method",
    status_code=201,
    response_model=PaymentMethodOut,
    summary="Vault single-use frontend tokens at their gateways as one reusable payment method",
    responses={
        **COMMON_ERRORS,
        201: {
            "model": PaymentMethodOut,
            "description": "Vaulted at the gateways listed in `gateways` (a gateway missing there refused its "
            "token or did not answer)",
        },
        400: {
            "model": ErrorEnvelope,
            "description": "Invalid request (gateway_not_configured; token_rejected: every gateway refused its "
            "token, each gateway's reason in the message; idempotency_error)",
        },
        409: {"model": ErrorEnvelope, "description": "A request with this Idempotency-Key is still running"},
        503: {
            "model": ErrorEnvelope,
            "description": "No gateway vaulted it and one or more could not be reached or did not answer (whatever "
            "the others said): retry later; the message names each gateway's reason",
        },
    },
)
async def create_payment_method(
    request: Request,
    params: PaymentMethodCreate,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    reply = await runtime.payment_methods.create(
        caller,
        params,
        request_id=request_id_of(request),
        idempotency_key=idempotency_key,
        raw_body=await request.json(),
        path=request.url.path,
    )
    return reply_response(reply)


@router.get(
    "/{payment_method_id}",
    operation_id="retrieve_payment_method",
    response_model=PaymentMethodOut,
    summary="Retrieve a payment method (its card summary and gateways; never a token)",
    responses={**COMMON_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such payment method"}},
)
async def get_payment_method(payment_method_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.payment_methods.get(caller, payment_method_id)
