"""HTTP for charges: parse, call the service, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from payorch.api.deps import CurrentCaller, RuntimeDep
from payorch.api.errors import request_id_of
from payorch.errors import InvalidRequest
from payorch.payments.schemas import ChargeCreate, ChargeList, ChargeOut, ErrorEnvelope, render_charge

router = APIRouter(prefix="/v1/charges", tags=["charges"])

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Invalid request (invalid_request_error, idempotency_error)"},
    401: {"model": ErrorEnvelope, "description": "Missing, malformed, revoked or unknown API key"},
    413: {"model": ErrorEnvelope, "description": "Request body too large"},
    415: {"model": ErrorEnvelope, "description": "Request body is not JSON"},
    429: {"model": ErrorEnvelope, "description": "Rate limited (rate_limit_error)"},
    500: {"model": ErrorEnvelope, "description": "Internal error (api_error)"},
}


@router.post(
    "",
    status_code=201,
    response_model=ChargeOut,
    summary="Create a charge",
    responses={
        **COMMON_ERRORS,
        201: {"model": ChargeOut, "description": "Charge succeeded, or authorized when capture=false"},
        202: {"model": ChargeOut, "description": "Outcome not known yet (processing): final state by webhook or GET"},
        402: {"model": ErrorEnvelope, "description": "Declined (card_error) with decline_code and the charge id"},
        409: {"model": ErrorEnvelope, "description": "A request with this Idempotency-Key is still running"},
        503: {"model": ErrorEnvelope, "description": "No gateway could take the charge (gateway_error)"},
    },
)
async def create_charge(
    request: Request,
    params: ChargeCreate,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
) -> Response:
    reply = await runtime.charges.create(
        caller,
        params,
        request_id=request_id_of(request),
        idempotency_key=idempotency_key,
        raw_body=await request.json(),
        path=request.url.path,
    )
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)


@router.get(
    "/{charge_id}",
    response_model=ChargeOut,
    summary="Retrieve a charge",
    responses={**COMMON_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such charge"}},
)
async def get_charge(charge_id: str, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return render_charge(await runtime.charges.get(caller, charge_id))


@router.get("", response_model=ChargeList, summary="List charges, newest first", responses=COMMON_ERRORS)
async def list_charges(
    request: Request,
    caller: CurrentCaller,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    starting_after: Annotated[str | None, Query(max_length=64)] = None,
    ending_before: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    if starting_after is not None and ending_before is not None:
        raise InvalidRequest("Use starting_after or ending_before, not both.", param="ending_before")
    charges, has_more = await runtime.charges.list_page(
        caller, limit=limit, starting_after=starting_after, ending_before=ending_before
    )
    return {
        "object": "list",
        "url": request.url.path,
        "has_more": has_more,
        "data": [render_charge(c) for c in charges],
    }
