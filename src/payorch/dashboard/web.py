"""The console's request plumbing: the session cookie, who is signed in, the merchant in view, forms
and their CSRF token, and rendering pages.

The session cookie is written by :class:`SessionCookies` (pure ASGI) from what the request left in
its scope: a handler never sets a cookie itself. Every POST goes through :func:`read_form`, which
refuses a form whose CSRF token does not match the session's before anything else reads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

import jinja2
from fastapi import Depends, Request
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.audit.events import Actor, Origin
from payorch.dashboard.config import DashboardConfig
from payorch.dashboard.sessions import COOKIE_NAME, CSRF_FIELD, Session, SessionCodec
from payorch.dashboard.users import actor_name
from payorch.errors import PermissionDenied
from payorch.runtime import Runtime
from payorch.security.api_keys import Caller
from payorch.storage import merchants as merchants_repo
from payorch.storage.dashboard_users import DashboardUser
from payorch.storage.merchants import Merchant

PREFIX = "/dashboard"
_SESSION_IN = "dashboard_session"
_SESSION_OUT = "dashboard_session_out"
_MAX_FORM_FIELDS = 50

# Pages load nothing from elsewhere and run no inline script or style; nobody may frame them.
PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class SignInRequired(Exception):
    """No one is signed in (or the session ended): the person is sent to the sign-in page."""

    def __init__(self, after: str | None = None) -> None:
        super().__init__("sign in first")
        self.after = after


class CsrfRefused(PermissionDenied):
    code = "csrf_token_invalid"


def local_path(candidate: str | None, default: str) -> str:
    """``candidate`` when it is a path of this dashboard (no other site: no open redirect)."""
    if candidate and candidate.startswith(PREFIX + "/") and not candidate.startswith("//") and "\\" not in candidate:
        return candidate
    return default


@dataclass
class Console:
    """What every page handler needs, built once with the app."""

    config: DashboardConfig
    production: bool
    sessions: SessionCodec
    templates: jinja2.Environment
    runtime_of: Callable[[], Runtime]

    @property
    def runtime(self) -> Runtime:
        return self.runtime_of()

    def secure(self, scope: Scope) -> bool:
        if self.config.secure_cookies is not None:
            return self.config.secure_cookies
        return self.production or scope.get("scheme") == "https"

    def page(self, request: Request, session: Session, template: str, *, status: int = 200, **context: Any) -> Response:
        """Render ``template``; the session's flash message is shown once."""
        flash, session = session.flash, replace(session, flash=None)
        keep(request, session)
        html = self.templates.get_template(template).render(
            prefix=PREFIX,
            csrf_field=CSRF_FIELD,
            csrf_token=self.sessions.csrf_token(session),
            flash=flash,
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def redirect(
        self, request: Request, session: Session, to: str, *, flash: tuple[str, str] | None = None
    ) -> Response:
        """303 to a page of the dashboard, with a message for it."""
        if flash is not None:
            session = session.with_flash(*flash)
        keep(request, session)
        return RedirectResponse(local_path(to, PREFIX + "/payments"), status_code=303)


def keep(request: Request, session: Session) -> None:
    """The session the response's cookie carries."""
    request.scope.setdefault("state", {})[_SESSION_OUT] = session


class SessionCookies:
    """Reads the session cookie into the scope, writes it back on the way out (HttpOnly, SameSite=Lax,
    Secure as the console decides), and adds the pages' security headers."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        presented = _cookie(scope)
        state = scope.setdefault("state", {})
        state[_SESSION_IN] = self.console.sessions.loads(presented) or Session.anonymous()

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PAGE_HEADERS.items():
                    headers.setdefault(name, value)
                out: Session | None = state.get(_SESSION_OUT)
                if out is not None:
                    value = self.console.sessions.dumps(out)
                    if value != presented:
                        headers.append("set-cookie", self._cookie_header(value, scope))
            await send(message)

        await self.app(scope, receive, send_with_cookie)

    def _cookie_header(self, value: str, scope: Scope) -> str:
        secure = "; Secure" if self.console.secure(scope) else ""
        return f"{COOKIE_NAME}={value}; Path={PREFIX}; HttpOnly; SameSite=Lax{secure}"


def _cookie(scope: Scope) -> str | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, cookie = part.strip().partition("=")
                if key == COOKIE_NAME:
                    return cookie
    return None


async def get_console(request: Request) -> Console:  # async: no thread hand-off
    console: Console = request.app.state.console
    return console


ConsoleDep = Annotated[Console, Depends(get_console)]


@dataclass(frozen=True, slots=True)
class Visit:
    """This request's session, and its user when one is signed in."""

    session: Session
    user: DashboardUser | None


async def get_visit(request: Request, console: ConsoleDep) -> Visit:
    session: Session = request.scope["state"][_SESSION_IN]
    if session.user_id is None:
        return Visit(session, None)
    if console.sessions.expired(session):
        minutes = f"{console.config.idle_timeout_minutes:g}"
        ended = Session.anonymous().with_flash("error", f"Your session ended ({minutes} minutes idle): sign in again.")
        keep(request, ended)
        return Visit(ended, None)
    user = await console.runtime.dashboard_users.get(session.user_id)
    if user is None or user.session_generation != session.generation:  # signed out since
        fresh = Session.anonymous()
        keep(request, fresh)
        return Visit(fresh, None)
    seen = replace(session, seen_at=time.time())
    keep(request, seen)
    return Visit(seen, user)


VisitDep = Annotated[Visit, Depends(get_visit)]


@dataclass(frozen=True, slots=True)
class Viewer:
    """A signed-in person and the merchant they are looking at."""

    user: DashboardUser
    session: Session
    merchant_id: str | None
    """Their merchant, or the one an operator picked; None for an operator while there is none."""
    merchants: list[Merchant]
    """Every merchant, for an operator's picker (empty for a merchant's user)."""
    origin: Origin

    @property
    def operator(self) -> bool:
        return self.user.operator

    def actor(self) -> Actor:
        return Actor(merchant_id=self.merchant_id, user=actor_name(self.user))

    def caller(self, *, livemode: bool) -> Caller:
        """Who the payment services see: this person, on the merchant in view, in one mode."""
        if self.merchant_id is None:
            raise PermissionDenied("Pick a merchant first.", code="merchant_required")
        return Caller(
            merchant_id=self.merchant_id,
            key_id=None,
            livemode=livemode,
            ip=self.origin.ip,
            request_id=self.origin.request_id,
            user=actor_name(self.user),
        )


async def get_viewer(request: Request, visit: VisitDep, console: ConsoleDep) -> Viewer:
    user = visit.user
    if user is None:
        raise SignInRequired(request.url.path if request.method == "GET" else None)
    merchants: list[Merchant] = []
    merchant_id = user.merchant_id
    if user.operator:
        async with console.runtime.db.connection() as connection:
            merchants = await merchants_repo.list_merchants(connection)
        known = {merchant.id for merchant in merchants}
        merchant_id = visit.session.merchant_id if visit.session.merchant_id in known else None
        if merchant_id is None and merchants:
            merchant_id = merchants[0].id
    state = request.scope.get("state", {})
    origin = Origin(ip=state.get("client_ip"), request_id=state.get("request_id"))
    return Viewer(user, visit.session, merchant_id, merchants, origin)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


@dataclass(frozen=True, slots=True)
class Form:
    fields: dict[str, str]

    def get(self, name: str) -> str | None:
        value = self.fields.get(name, "").strip()
        return value or None


async def read_form(request: Request, visit: VisitDep, console: ConsoleDep) -> Form:
    """The posted form, once its CSRF token matched the session's."""
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise CsrfRefused("The form could not be read; reload the page and try again.") from None
    fields = dict(pairs)
    if not console.sessions.csrf_ok(visit.session, fields.get(CSRF_FIELD)):
        raise CsrfRefused(
            "This form was not sent from this dashboard page (its security token is missing or expired): "
            "reload the page and try again."
        )
    return Form(fields)


FormDep = Annotated[Form, Depends(read_form)]


def sign_in_url(after: str | None) -> str:
    target = local_path(after, "")
    return f"{PREFIX}/sign-in" + (f"?next={quote(target)}" if target else "")
