"""The dashboard's ASGI app, mounted by ``payorch.app`` at ``/dashboard``.

A FastAPI app of its own: it is not part of the public API's OpenAPI document, has no docs pages,
and answers its errors as HTML pages (a missing object is 404, as in the API; a form without its
CSRF token 403).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import jinja2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from payorch.dashboard.pages import api_keys, audit, auth, charges, gateways, payments, webhooks
from payorch.dashboard.sessions import Session
from payorch.dashboard.web import Console, SessionCookies, SignInRequired, sign_in_url
from payorch.errors import ApiError
from payorch.money import to_major_string
from payorch.runtime import Runtime
from payorch.settings import Settings
from payorch.storage.dashboard_users import DashboardUser

from .services import session_codec


def money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "—"
    return f"{to_major_string(amount, currency)} {currency.upper()}"


def when(moment: datetime | None) -> str:
    return "—" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def templates() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("payorch.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = money
    environment.filters["when"] = when
    return environment


def _error_page(console: Console, request: Request, status: int, title: str, message: str) -> Response:
    state = request.scope.get("state", {})
    session: Session = state.get("dashboard_session") or Session.anonymous()
    user: DashboardUser | None = None
    return console.page(request, session, "error.html", status=status, title=title, message=message, user=user)


def _install_errors(app: FastAPI, console: Console) -> None:
    async def signed_out(_request: Request, error: Exception) -> Response:
        after = error.after if isinstance(error, SignInRequired) else None
        return RedirectResponse(sign_in_url(after), status_code=303)

    async def refused(request: Request, error: Exception) -> Response:
        if not isinstance(error, ApiError):
            raise error
        title = "Not found" if error.status == 404 else "Request refused"
        return _error_page(console, request, error.status, title, f"{error.message} ({error.error_code})")

    async def http_error(request: Request, error: Exception) -> Response:
        status = error.status_code if isinstance(error, StarletteHTTPException) else 500
        return _error_page(console, request, status, "Not found" if status == 404 else "Error", str(error))

    async def invalid(request: Request, _error: Exception) -> Response:
        return _error_page(console, request, 400, "Request refused", "This address is not valid.")

    app.add_exception_handler(SignInRequired, signed_out)
    app.add_exception_handler(ApiError, refused)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def build_dashboard(settings: Settings, runtime_of: Callable[[], Runtime]) -> FastAPI | None:
    """The console, or None when it is not served (turned off, or no session key can be had)."""
    production = settings.environment == "production"
    if not settings.dashboard.served(production=production):
        return None
    codec = session_codec(settings.dashboard, data_dir=settings.data_dir)
    if codec is None:
        return None
    console = Console(settings.dashboard, production, codec, templates(), runtime_of)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="payorch dashboard")
    app.state.console = console
    for module in (auth, payments, charges, gateways, webhooks, api_keys, audit):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(packages=[("payorch.dashboard", "static")]), name="static")
    _install_errors(app, console)
    app.add_middleware(SessionCookies, console=console)
    return app
