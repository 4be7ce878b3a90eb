"""Payments: search one merchant's charges, newest first, a page at a time."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payorch.dashboard.forms import MODES, read_search
from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import PREFIX, ConsoleDep, ViewerDep
from payorch.payments.states import ChargeStatus
from payorch.storage.charges import Charge

router = APIRouter()

PAGE_SIZE = 25
Cursor = Annotated[str | None, Query(max_length=64)]


def _links(
    typed: dict[str, str], page: list[Charge], more: bool, starting_after: str | None, ending_before: str | None
) -> tuple[str | None, str | None]:
    """(newer, older) page links that keep the filters: Stripe's cursors over ids."""
    kept = {name: value for name, value in typed.items() if value}

    def link(**cursor: str) -> str:
        return f"{PREFIX}/payments?{urlencode({**kept, **cursor})}"

    if not page:
        return None, None
    newer_exists = starting_after is not None or (ending_before is not None and more)
    older_exists = ending_before is not None or (ending_before is None and more)
    newer = link(ending_before=page[0].id) if newer_exists else None
    older = link(starting_after=page[-1].id) if older_exists else None
    return newer, older


@router.get("/payments")
async def payments(
    request: Request,
    viewer: ViewerDep,
    console: ConsoleDep,
    starting_after: Cursor = None,
    ending_before: Cursor = None,
) -> Response:
    runtime = console.runtime
    gateways = runtime.registry.names
    context: dict[str, Any] = {
        "title": "Payments",
        "viewer": viewer,
        "gateways": gateways,
        "statuses": [status.value for status in ChargeStatus],
        "modes": list(MODES),
    }
    if viewer.merchant_id is None:
        return console.page(request, viewer.session, "payments.html", search=None, charges=[], **context)
    query = dict(request.query_params.items())
    search = read_search(viewer.merchant_id, query, gateways)
    if search.problems:
        return console.page(request, viewer.session, "payments.html", status=400, search=search, charges=[], **context)
    charges, more = await ConsoleReads(runtime.db).search(
        search.filter, limit=PAGE_SIZE, starting_after=starting_after, ending_before=ending_before
    )
    newer, older = _links(search.typed, charges, more, starting_after, ending_before)
    return console.page(
        request, viewer.session, "payments.html", search=search, charges=charges, newer=newer, older=older, **context
    )
