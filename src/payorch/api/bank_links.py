"""HTTP for bank links: create (API key), the provider's browser redirect (no API key), retrieve."""

from __future__ import annotations

import html
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from payorch.api.deps import CurrentCaller, RuntimeDep
from payorch.api.errors import API_ERRORS, request_id_of
from payorch.audit.events import Origin
from payorch.banking.schemas import BankLinkCreate, BankLinkCreated, BankLinkOut, render_bank_link
from payorch.banking.service import BankLinkingNotConfigured, BankLinkService, CallbackRefused
from payorch.payments.schemas import ErrorEnvelope

router = APIRouter(prefix="/v1/bank_links", tags=["bank links"])

COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    **API_ERRORS,
    503: {"model": ErrorEnvelope, "description": "Bank linking is not configured (bank_linking_not_configured)"},
}

READ_ERRORS: dict[int | str, dict[str, Any]] = {status: COMMON_ERRORS[status] for status in (400, 401, 429, 500, 503)}

# The callback URL carries the authorization code and the state: keep both out of any Referer.
_CALLBACK_HEADERS = {"Referrer-Policy": "no-referrer"}


async def get_bank_links(runtime: RuntimeDep) -> BankLinkService:
    if runtime.bank_links is None:
        raise BankLinkingNotConfigured("Bank linking is not configured on this payorch (settings.banking.provider).")
    return runtime.bank_links


BankLinks = Annotated[BankLinkService, Depends(get_bank_links)]


@router.post(
    "",
    operation_id="create_bank_link",
    status_code=201,
    response_model=BankLinkCreated,
    summary="Start linking a bank account",
    description=(
        "Creates a pending link and returns the provider's `authorize_url`, to which you send the end "
        "user's browser. The URL carries a single-use `state` (256 random bits, stored only as a hash) "
        "and a PKCE S256 challenge whose verifier never leaves payorch. It expires at `expires_at`."
    ),
    responses={**COMMON_ERRORS, 201: {"model": BankLinkCreated, "description": "The pending link"}},
)
async def create_bank_link(params: BankLinkCreate, caller: CurrentCaller, bank_links: BankLinks) -> dict[str, Any]:
    created = await bank_links.create(caller, params.user_reference)
    return {**render_bank_link(created.link), "authorize_url": created.authorize_url}


@router.get(
    "/callback",
    operation_id="complete_bank_link",
    status_code=303,
    summary="OAuth redirect target (the end user's browser, no API key)",
    description=(
        "Register this URL as the provider's redirect URI. It accepts only a known, unexpired, unused "
        "`state`, redeems `code` at the token endpoint with the PKCE verifier, keeps the refresh token "
        "in the secrets store, and answers 303 to the configured success URL with `?bank_link=bl_...`, "
        "or to the failure URL with `?bank_link=bl_...&error=<code>` (the link is then `failed` with "
        "the reason). A callback whose `state` is missing, unknown or already used touches no link "
        "and answers 400: an HTML page when the browser accepts `text/html`, else the JSON envelope."
    ),
    response_class=RedirectResponse,
    openapi_extra={"security": []},
    responses={
        303: {"description": "To the success or failure URL; never carries a token"},
        400: {
            "model": ErrorEnvelope,
            "description": "state missing, unknown or already used (state_missing, state_unknown, state_used)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        429: {"model": ErrorEnvelope, "description": "Rate limited (rate_limit_error)"},
        500: {"model": ErrorEnvelope, "description": "Internal error (api_error)"},
        503: COMMON_ERRORS[503],
    },
)
async def bank_link_callback(
    request: Request,
    bank_links: BankLinks,
    code: Annotated[str | None, Query(description="The authorization code")] = None,
    state: Annotated[str | None, Query(description="The state payorch put in the authorize URL")] = None,
    error: Annotated[str | None, Query(description="The provider's error code (RFC 6749 4.1.2.1)")] = None,
    error_description: Annotated[str | None, Query(description="The provider's error text")] = None,
) -> Response:
    origin = Origin(
        ip=request.scope.get("state", {}).get("client_ip") or (request.client.host if request.client else None),
        request_id=request_id_of(request),
    )
    try:
        outcome = await bank_links.complete(
            state=state, code=code, error=error, error_description=error_description, origin=origin
        )
    except CallbackRefused as refused:
        return _refusal(request, refused)
    provider = bank_links.provider
    if outcome.completed:
        target = httpx.URL(provider.success_url).copy_merge_params({"bank_link": outcome.link_id})
    else:
        params = {"bank_link": outcome.link_id, "error": outcome.failure_code or "failed"}
        target = httpx.URL(provider.failure_url).copy_merge_params(params)
    return RedirectResponse(str(target), status_code=303, headers=_CALLBACK_HEADERS)


def _refusal(request: Request, refused: CallbackRefused) -> Response:
    request_id = request_id_of(request)
    if "text/html" in request.headers.get("accept", ""):
        page = (
            "<!doctype html><html><head><meta charset=utf-8><title>Bank link not completed</title></head>"
            f"<body><h1>This bank link could not be completed</h1><p>{html.escape(refused.message)}</p>"
            "<p>Start again from the page that sent you to your bank.</p>"
            f"<p><small>Reference: {html.escape(request_id)}</small></p></body></html>"
        )
        return HTMLResponse(page, status_code=refused.status, headers=_CALLBACK_HEADERS)
    return JSONResponse(refused.body(request_id), status_code=refused.status, headers=_CALLBACK_HEADERS)


@router.get(
    "/{bank_link_id}",
    operation_id="retrieve_bank_link",
    response_model=BankLinkOut,
    summary="Retrieve a bank link (status only, never a token)",
    responses={**READ_ERRORS, 404: {"model": ErrorEnvelope, "description": "No such bank link"}},
)
async def get_bank_link(bank_link_id: str, caller: CurrentCaller, bank_links: BankLinks) -> dict[str, Any]:
    return render_bank_link(await bank_links.get(caller, bank_link_id))
