"""HTTP for charges: parse, call the service, render."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response

from payorch.api.deps import CurrentCaller, IdempotencyKey, RuntimeDep, reply_response
from payorch.api.errors import API_ERRORS, request_id_of
from payorch.errors import InvalidRequest
from payorch.payments.captures import CaptureParams
from payorch.payments.charge_confirm import ConfirmParams
from payorch.payments.schemas import ChargeCreate, ChargeList, ChargeOut, ErrorEnvelope, render_charge
from payorch.runtime import Runtime

router = APIRouter(prefix="/v1/charges", tags=["charges"])

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    400: {"model": ErrorEnvelope, "description": "Invalid request (invalid_request_error, idempotency_error)"},
}


@router.post(
    "",
    operation_id="create_charge",
    status_code=201,
    response_model=ChargeOut,
    summary="Create a charge",
    responses={
        **COMMON_ERRORS,
        400: {
            "model": ErrorEnvelope,
            "description": "Invalid request (invalid_request_error, idempotency_error); or every candidate gateway "
            "refused the request as invalid: token_rejected (the payment method: an unknown or used token) or "
            "parameter_invalid, with each gateway's code and message and the failed charge's id",
        },
        201: {"model": ChargeOut, "description": "Charge succeeded, or authorized when capture=false"},
        202: {
            "model": ChargeOut,
            "description": "Not final yet: `processing` (outcome not known; final state by webhook or GET), or "
            "`requires_action` (the customer must authenticate: follow `next_action`, then confirm)",
        },
        402: {
            "model": ErrorEnvelope,
            "description": "Declined (card_error) with decline_code and the charge id; an off-session charge the "
            "issuer wants authenticated is `authentication_required` with the `next_action` to send the customer",
        },
        409: {"model": ErrorEnvelope, "description": "A request with this Idempotency-Key is still running"},
        503: {
            "model": ErrorEnvelope,
            "description": "No gateway could take the charge (gateway_error, gateway_unavailable): one was down or "
            "not reached; the message names each gateway's answer",
        },
    },
)
async def create_charge(
    request: Request, params: ChargeCreate, caller: CurrentCaller, idempotency_key: IdempotencyKey = None
) -> Response:
    runtime: Runtime = request.app.state.runtime  # the hot path: one dependency fewer to solve
    reply = await runtime.charges.create(
        caller,
        params,
        request_id=request_id_of(request),
        idempotency_key=idempotency_key,
        raw_body=await request.json(),
        path=request.url.path,
    )
    return reply_response(reply)


@router.get(
    "/{charge_id}",
    operation_id="retrieve_charge",
    response_model=ChargeOut,
    summary="Retrieve a charge",
    responses={**COMMON_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such charge"}},
)
async def get_charge(charge_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> Response:
    # Rendered once, as POST answers: no second validation and serialization through ChargeOut
    # (which stays the documented response model).
    return _json_response(render_charge(await runtime.charges.get(caller, charge_id)))


@router.get(
    "",
    operation_id="list_charges",
    response_model=ChargeList,
    summary="List charges, newest first",
    responses=COMMON_ERRORS,
)
async def list_charges(
    request: Request,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    starting_after: Annotated[str | None, Query(max_length=64)] = None,
    ending_before: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    if starting_after is not None and ending_before is not None:
        raise InvalidRequest("Use starting_after or ending_before, not both.", param="ending_before")
    charges, has_more = await runtime.charges.list_page(
        caller, limit=limit, starting_after=starting_after, ending_before=ending_before
    )
    return _json_response(
        {"object": "list", "url": request.url.path, "has_more": has_more, "data": [render_charge(c) for c in charges]}
    )


def _json_response(payload: dict[str, Any]) -> Response:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, media_type="application/json")


FOLLOW_UP_ERRORS: dict[int | str, dict[str, Any]] = {
    **COMMON_ERRORS,
    400: {
        "model": ErrorEnvelope,
        "description": "Invalid request, or the charge is not in a state that allows it (charge_already_captured, "
        "charge_canceled, charge_failed, charge_invalid_state, amount_too_large, capture_in_progress)",
    },
    402: {"model": ErrorEnvelope, "description": "The gateway refused it (gateway_refused); the charge is unchanged"},
    404: {"model": ErrorEnvelope, "description": "No such charge (or another merchant's)"},
    502: {
        "model": ErrorEnvelope,
        "description": "The gateway's answer was lost (gateway_outcome_unknown); the charge is unchanged and "
        "retrying is safe: the gateway gets the same idempotency key and acts at most once",
    },
    503: {
        "model": ErrorEnvelope,
        "description": "The gateway could not be reached (gateway_unavailable); nothing was done",
    },
}


@router.post(
    "/{charge_id}/capture",
    operation_id="capture_charge",
    response_model=ChargeOut,
    summary="Capture an authorized charge (all, or part of it, once)",
    responses={**FOLLOW_UP_ERRORS, 200: {"model": ChargeOut, "description": "Captured: the charge succeeded"}},
)
async def capture_charge(
    request: Request,
    charge_id: str,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    params: Annotated[CaptureParams | None, Body()] = None,
) -> Response:
    amount = None if params is None else params.amount
    return reply_response(await runtime.captures.capture(caller, charge_id, amount, request_id=request_id_of(request)))


@router.post(
    "/{charge_id}/cancel",
    operation_id="cancel_charge",
    response_model=ChargeOut,
    summary="Cancel (void) an authorized charge",
    responses={**FOLLOW_UP_ERRORS, 200: {"model": ChargeOut, "description": "Canceled: the authorization is released"}},
)
async def cancel_charge(request: Request, charge_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> Response:
    return reply_response(await runtime.captures.cancel(caller, charge_id, request_id=request_id_of(request)))


@router.post(
    "/{charge_id}/confirm",
    response_model=ChargeOut,
    operation_id="confirm_charge",
    summary="Finish a charge after its customer authenticated (3-D Secure)",
    responses={
        **FOLLOW_UP_ERRORS,
        200: {"model": ChargeOut, "description": "Finished (succeeded or authorized), or final already: a no-op"},
        202: {"model": ChargeOut, "description": "The customer has not finished authenticating: still requires_action"},
        400: {
            "model": ErrorEnvelope,
            "description": "Invalid request, or the charge is not waiting for authentication (charge_invalid_state)",
        },
        402: {
            "model": ErrorEnvelope,
            "description": "The authentication failed (card_error): the charge failed; or an off-session charge "
            "still waits for its customer (authentication_required, with next_action)",
        },
        502: {
            "model": ErrorEnvelope,
            "description": "The gateway's answer was lost (gateway_outcome_unknown); the charge still waits and "
            "retrying is safe",
        },
    },
)
async def confirm_charge(
    request: Request,
    charge_id: str,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    params: Annotated[ConfirmParams | None, Body()] = None,
) -> Response:
    details = {} if params is None or params.details is None else dict(params.details)
    reply = await runtime.confirmations.confirm(caller, charge_id, details, request_id=request_id_of(request))
    return reply_response(reply)
