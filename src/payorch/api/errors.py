"""Every error leaves as the envelope; never a stack trace, never a 500 for bad input."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from payorch.errors import ApiError, AuthenticationFailed, InvalidRequest, NotFound, PayloadTooLarge
from payorch.payments.schemas import ErrorEnvelope

log = logging.getLogger(__name__)

API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "Invalid request (invalid_request_error)"},
    401: {"model": ErrorEnvelope, "description": "Missing, malformed, revoked or unknown API key"},
    413: {"model": ErrorEnvelope, "description": "Request body too large"},
    415: {"model": ErrorEnvelope, "description": "Request body is not JSON"},
    429: {"model": ErrorEnvelope, "description": "Rate limited (rate_limit_error)"},
    500: {"model": ErrorEnvelope, "description": "Internal error (api_error)"},
}
"""The answers every authenticated JSON route can give, for the OpenAPI document."""


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "req_unknown"))


def error_response(request: Request, error: ApiError) -> JSONResponse:
    request_id = request_id_of(request)
    # Set here too: a 500 is answered by Starlette's outermost error middleware, past ours.
    headers = {**error.headers, "Request-Id": request_id, "Cache-Control": "no-store"}
    return JSONResponse(error.body(request_id), status_code=error.status, headers=headers)


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header") and not str(p).startswith("__")]
    return ".".join(parts) or None


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("The request is invalid.")
    first = errors[0]
    kind, loc = first.get("type", ""), tuple(first.get("loc", ()))
    if kind == "json_invalid":
        return InvalidRequest("The request body is not valid JSON.", code="invalid_json")
    param = _param(loc)
    if loc[:1] == ("header",) and param and param.lower() == "idempotency-key":
        return InvalidRequest("Idempotency-Key must be 1 to 255 characters.", param="Idempotency-Key")
    if kind == "missing":
        return InvalidRequest(f"Missing required param: {param}.", param=param, code="parameter_missing")
    if kind == "extra_forbidden":
        return InvalidRequest(f"Received unknown parameter: {param}.", param=param, code="parameter_unknown")
    # pydantic's message describes the rule broken; the input itself is never echoed back.
    message = str(first.get("msg", "Invalid value"))
    return InvalidRequest(f"Invalid {param or 'request'}: {message}.", param=param)


_METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> str:
    """Every method some route answers at this path (RFC 9110 15.5.6). Starlette's own ``Allow``
    names only the methods of the first route whose path matched, not those of the others."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes)
    )


def install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc)

    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, _validation_error(exc))

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, ApiError):
            return error_response(request, exc.__cause__)
        error: ApiError
        if exc.status_code == 404:
            error = NotFound("Unrecognized request URL.")
        elif exc.status_code == 401:
            error = AuthenticationFailed("Invalid API key provided.")
        elif exc.status_code == 405:
            allow = {"Allow": allowed_methods(request)}
            error = InvalidRequest("Method not allowed for this URL.", code="method_not_allowed", headers=allow)
            response = error_response(request, error)
            response.status_code = 405
            return response
        elif exc.status_code == 413:
            error = PayloadTooLarge("The request body is too large.")
        else:
            error = InvalidRequest(str(exc.detail) if exc.status_code < 500 else "The request failed.")
        return error_response(request, error)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        error = ApiError("An internal error occurred; it has been logged with this request id.")
        return error_response(request, error)

    app.add_exception_handler(ApiError, api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
