"""HTTP for gateway accounts and routing: parse, call the service, render."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from payorch.accounts.schemas import (
    AccountCreate,
    AccountDeleted,
    AccountList,
    AccountOut,
    AccountUpdate,
    EvaluateOut,
    EvaluateRequest,
    RoutingOutDoc,
    RoutingPut,
)
from payorch.api.deps import CurrentCaller, RuntimeDep
from payorch.api.errors import API_ERRORS
from payorch.payments.schemas import ErrorEnvelope

accounts_router = APIRouter(prefix="/v1/gateway_accounts", tags=["gateway accounts"])
routing_router = APIRouter(prefix="/v1/routing", tags=["routing"])

AccountId = Annotated[str, Path(max_length=64, description="The account's id (`ga_...`).")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such gateway account (or another merchant's, or mode's)"}
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    400: {
        "model": ErrorEnvelope,
        "description": "Invalid request: a credential of the wrong shape (its field named in `param`), or "
        "credentials the gateway refused (`credentials_refused`) when `verify` was asked",
    },
    409: {"model": ErrorEnvelope, "description": "The name is taken, or the account changed concurrently"},
    503: {
        "model": ErrorEnvelope,
        "description": "The gateway (verify) or the key service could not be reached, or production has no "
        "key service to seal credentials with (`kms_not_configured`)",
    },
}


@accounts_router.post(
    "",
    status_code=201,
    response_model=AccountOut,
    operation_id="create_gateway_account",
    summary="Connect a gateway account",
    description="The credentials are validated by the gateway's own model, sealed with envelope "
    "encryption and never returned: answers show their fingerprint and last 4 characters.",
    responses=WRITE_ERRORS,
)
async def create_account(params: AccountCreate, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.accounts.create(caller, params)


@accounts_router.get(
    "",
    response_model=AccountList,
    operation_id="list_gateway_accounts",
    summary="List your gateway accounts (this key's mode) and the platform's",
    responses=API_ERRORS,
)
async def list_accounts(caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.accounts.list(caller)


@accounts_router.get(
    "/{account_id}",
    response_model=AccountOut,
    operation_id="retrieve_gateway_account",
    summary="Retrieve a gateway account",
    responses={**API_ERRORS, **NOT_FOUND},
)
async def get_account(account_id: AccountId, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.accounts.get(caller, account_id)


@accounts_router.post(
    "/{account_id}",
    response_model=AccountOut,
    operation_id="update_gateway_account",
    summary="Update a gateway account (name, credentials, timeout, fees, enabled)",
    description="Disabling stops new charges on it; its charges' captures, refunds, lookups and notifications go on.",
    responses={**WRITE_ERRORS, **NOT_FOUND},
)
async def update_account(
    account_id: AccountId, params: Annotated[AccountUpdate, Body()], caller: CurrentCaller, runtime: RuntimeDep
) -> dict[str, Any]:
    return await runtime.accounts.update(caller, account_id, params)


@accounts_router.delete(
    "/{account_id}",
    response_model=AccountDeleted,
    operation_id="delete_gateway_account",
    summary="Delete a gateway account",
    responses={
        **API_ERRORS,
        **NOT_FOUND,
        409: {
            "model": ErrorEnvelope,
            "description": "It holds charges still capturable, refundable or being resolved (account_in_use)",
        },
    },
)
async def delete_account(account_id: AccountId, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.accounts.delete(caller, account_id)


@routing_router.put(
    "",
    response_model=RoutingOutDoc,
    operation_id="update_routing",
    summary="Store a new version of your routing configuration",
    responses={
        **API_ERRORS,
        400: {"model": ErrorEnvelope, "description": "Invalid configuration (routing_invalid): `param` names the rule"},
        409: {"model": ErrorEnvelope, "description": "Another version was stored at the same time"},
    },
)
async def put_routing(params: RoutingPut, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.routing.put(caller, params)


@routing_router.get(
    "",
    response_model=RoutingOutDoc,
    operation_id="retrieve_routing",
    summary="Your current routing configuration and its history",
    responses=API_ERRORS,
)
async def get_routing(caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.routing.get(caller)


@routing_router.post(
    "/evaluate",
    response_model=EvaluateOut,
    operation_id="evaluate_routing",
    summary="Dry run: how a charge would be routed now",
    description="The matched rule, the ordered candidates and why each other account is left out; "
    "no gateway is called and nothing is stored.",
    responses={
        **API_ERRORS,
        400: {"model": ErrorEnvelope, "description": "Invalid request, or a token naming no account"},
    },
)
async def evaluate_routing(params: EvaluateRequest, caller: CurrentCaller, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.routing.evaluate(caller, params)
