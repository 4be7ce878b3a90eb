"""Signing in and out, and the merchant an operator looks at."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payorch.audit.events import Origin
from payorch.dashboard.sessions import Session
from payorch.dashboard.web import PREFIX, ConsoleDep, FormDep, ViewerDep, VisitDep, local_path

router = APIRouter()

HOME = f"{PREFIX}/payments"


def _origin(request: Request) -> Origin:
    state = request.scope.get("state", {})
    return Origin(ip=state.get("client_ip"), request_id=state.get("request_id"))


@router.get("/")
async def home(request: Request, visit: VisitDep, console: ConsoleDep) -> Response:
    return console.redirect(request, visit.session, HOME if visit.user else f"{PREFIX}/sign-in")


@router.get("/sign-in")
async def sign_in_page(
    request: Request, visit: VisitDep, console: ConsoleDep, next_page: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    if visit.user is not None:
        return console.redirect(request, visit.session, local_path(next_page, HOME))
    return console.page(request, visit.session, "sign_in.html", title="Sign in", next_page=local_path(next_page, ""))


@router.post("/sign-in")
async def sign_in(request: Request, visit: VisitDep, form: FormDep, console: ConsoleDep) -> Response:
    email, password = form.get("email") or "", form.fields.get("password", "")
    result = await console.runtime.dashboard_users.sign_in(email, password, _origin(request))
    if result.user is None:
        if result.refusal == "locked":
            minutes = f"{console.config.lockout_minutes:g}"
            message = (
                f"Too many failed sign-ins: this account is locked for {minutes} minutes. "
                "An operator can unlock it sooner (payorch users unlock)."
            )
            status = 423
        else:
            message, status = "Incorrect email or password.", 401
        return console.page(
            request,
            visit.session,
            "sign_in.html",
            status=status,
            title="Sign in",
            problem=message,
            email=email,
            next_page=local_path(form.get("next"), ""),
        )
    session = visit.session.signed_in(result.user.id, result.user.session_generation, result.user.merchant_id)
    return console.redirect(request, session, local_path(form.get("next"), HOME))


@router.post("/sign-out")
async def sign_out(request: Request, viewer: ViewerDep, _checked: FormDep, console: ConsoleDep) -> Response:
    await console.runtime.dashboard_users.sign_out(viewer.user, viewer.origin)
    session = Session.anonymous().with_flash("ok", "You are signed out.")
    return console.redirect(request, session, f"{PREFIX}/sign-in")


@router.post("/merchant")
async def pick_merchant(request: Request, viewer: ViewerDep, form: FormDep, console: ConsoleDep) -> Response:
    """An operator looks at another merchant (a merchant's user has only their own)."""
    wanted = form.get("merchant_id")
    back = local_path(form.get("back"), HOME)
    if not viewer.operator or wanted not in {merchant.id for merchant in viewer.merchants}:
        return console.redirect(request, viewer.session, back, flash=("error", "No such merchant."))
    return console.redirect(request, replace(viewer.session, merchant_id=wanted), back)
