"""A charge's page, and what a person may do to it: capture, cancel, refund, redeliver a webhook.

Each action goes through the very service the API's route calls (``runtime.captures``,
``runtime.refunds``, ``runtime.webhooks.endpoints``), as the signed-in person on the charge's own
merchant and mode, so the rules, the idempotency and the errors are the API's. The refund form
carries an idempotency key made when the page was shown: sending it twice refunds once.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, get_args

import orjson
from fastapi import APIRouter, Path, Request
from pydantic import ValidationError
from starlette.responses import Response

from payorch.dashboard.forms import AmountError, parse_amount
from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import PREFIX, Console, ConsoleDep, Form, FormDep, Viewer, ViewerDep, local_path
from payorch.errors import ApiError, InvalidRequest
from payorch.ids import new_id
from payorch.payments.operations import Reply
from payorch.payments.refund_create import RefundCreate
from payorch.payments.refunds import RefundReason
from payorch.storage.charges import Attempt, Charge
from payorch.storage.refunds import Refund

router = APIRouter()

ChargeId = Annotated[str, Path(min_length=1, max_length=64)]
REASONS: list[str] = list(get_args(RefundReason))


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str
    """``attempt`` or ``refund``."""
    at: datetime
    item: Attempt | Refund


def _page(charge_id: str) -> str:
    return f"{PREFIX}/charges/{charge_id}"


def _request_id(viewer: Viewer) -> str:
    return viewer.origin.request_id or new_id("req")


def _answer(reply: Reply, done: str) -> tuple[str, str]:
    """A flash for what the service answered: its error's message (and code) as the API states it."""
    if reply.status < 400:
        return "ok", done
    error = orjson.loads(reply.body).get("error", {})
    return "error", f"{error.get('message', 'The request failed.')} ({error.get('code', reply.status)})"


def _refused(error: ApiError) -> tuple[str, str]:
    return "error", f"{error.message} ({error.error_code})"


async def _charge(console: Console, viewer: Viewer, charge_id: str) -> Charge:
    if viewer.merchant_id is None:
        raise InvalidRequest("Pick a merchant first.", code="merchant_required")
    return (await ConsoleReads(console.runtime.db).charge(viewer.merchant_id, charge_id)).charge


@router.get("/charges/{charge_id}")
async def charge_page(request: Request, charge_id: ChargeId, viewer: ViewerDep, console: ConsoleDep) -> Response:
    if viewer.merchant_id is None:
        raise InvalidRequest("Pick a merchant first.", code="merchant_required")
    view = await ConsoleReads(console.runtime.db).charge(viewer.merchant_id, charge_id)
    timeline = [TimelineEntry("attempt", a.created_at, a) for a in view.attempts]
    timeline += [TimelineEntry("refund", r.created_at, r) for r in view.refunds]
    timeline.sort(key=lambda entry: entry.at)
    return console.page(
        request,
        viewer.session,
        "charge.html",
        title=f"Charge {charge_id}",
        viewer=viewer,
        view=view,
        charge=view.charge,
        timeline=timeline,
        refund_key=f"dash_{secrets.token_urlsafe(18)}",
        reasons=REASONS,
    )


Flash = tuple[str, str]


def _amount(form: Form, charge: Charge) -> int | None:
    typed = form.get("amount")
    return None if typed is None else parse_amount(typed, charge.currency)


async def _act(
    request: Request, viewer: Viewer, console: Console, charge_id: str, perform: Callable[[Charge], Awaitable[Flash]]
) -> Response:
    """Do something to the merchant's charge and show how it went on its page. Another merchant's
    charge is not found (404) before anything is done."""
    charge = await _charge(console, viewer, charge_id)
    try:
        flash = await perform(charge)
    except AmountError as error:
        flash = ("error", str(error))
    except ValidationError as error:  # a refund reason not in the list
        flash = ("error", f"Invalid request: {error.errors()[0]['msg']}")
    except ApiError as error:
        flash = _refused(error)
    return console.redirect(request, viewer.session, _page(charge_id), flash=flash)


@router.post("/charges/{charge_id}/capture")
async def capture(
    request: Request, charge_id: ChargeId, viewer: ViewerDep, form: FormDep, console: ConsoleDep
) -> Response:
    async def perform(charge: Charge) -> Flash:
        caller = viewer.caller(livemode=charge.livemode)
        reply = await console.runtime.captures.capture(
            caller, charge.id, _amount(form, charge), request_id=_request_id(viewer)
        )
        return _answer(reply, "Captured.")

    return await _act(request, viewer, console, charge_id, perform)


@router.post("/charges/{charge_id}/cancel")
async def cancel(
    request: Request, charge_id: ChargeId, viewer: ViewerDep, _checked: FormDep, console: ConsoleDep
) -> Response:
    async def perform(charge: Charge) -> Flash:
        caller = viewer.caller(livemode=charge.livemode)
        reply = await console.runtime.captures.cancel(caller, charge.id, request_id=_request_id(viewer))
        return _answer(reply, "Canceled: the authorization is released.")

    return await _act(request, viewer, console, charge_id, perform)


@router.post("/charges/{charge_id}/refund")
async def refund(
    request: Request, charge_id: ChargeId, viewer: ViewerDep, form: FormDep, console: ConsoleDep
) -> Response:
    key = form.get("idempotency_key")

    async def perform(charge: Charge) -> Flash:
        body: dict[str, object] = {"charge": charge.id, "amount": _amount(form, charge), "reason": form.get("reason")}
        params = RefundCreate.model_validate({name: value for name, value in body.items() if value is not None})
        reply = await console.runtime.refunds.create(
            viewer.caller(livemode=charge.livemode),
            params,
            request_id=_request_id(viewer),
            idempotency_key=None if key is None else key[:255],
            raw_body=body,
            path=request.url.path,
        )
        done = "Refund sent." if reply.status == 201 else "Refund sent; the gateway's answer is not known yet."
        return _answer(reply, done + (" (the same form was sent before: nothing new)" if reply.replayed else ""))

    return await _act(request, viewer, console, charge_id, perform)


@router.post("/deliveries/{delivery_id}/redeliver")
async def redeliver(
    request: Request,
    delivery_id: Annotated[str, Path(min_length=1, max_length=64)],
    viewer: ViewerDep,
    form: FormDep,
    console: ConsoleDep,
) -> Response:
    """Queue a delivery again now; another merchant's delivery is not found, as in the API."""
    endpoint_id = form.get("endpoint_id") or ""
    caller = viewer.caller(livemode=form.get("mode") == "live")
    await console.runtime.webhooks.endpoints.redeliver(caller, endpoint_id, delivery_id)
    back = local_path(form.get("back"), f"{PREFIX}/webhooks")
    return console.redirect(request, viewer.session, back, flash=("ok", f"Delivery {delivery_id} queued again."))
