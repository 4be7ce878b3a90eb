"""API keys: the merchant's keys; create one (shown this once) and revoke one.

A new key is shown in the answer to the POST itself, never through a redirect: the session cookie
is signed, not encrypted, and must never carry it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import PREFIX, Console, ConsoleDep, FormDep, Viewer, ViewerDep
from payorch.errors import InvalidRequest, NotFound
from payorch.security.api_keys import Mode, NewKey, issue_key, revoke_key

router = APIRouter()


def _merchant(viewer: Viewer) -> str:
    if viewer.merchant_id is None:
        raise InvalidRequest("Pick a merchant first.", code="merchant_required")
    return viewer.merchant_id


async def _page(request: Request, viewer: Viewer, console: Console, new_key: NewKey | None = None) -> Response:
    keys = [] if viewer.merchant_id is None else await ConsoleReads(console.runtime.db).api_keys(viewer.merchant_id)
    return console.page(
        request, viewer.session, "api_keys.html", title="API keys", viewer=viewer, keys=keys, new_key=new_key
    )


@router.get("/api-keys")
async def api_keys(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    return await _page(request, viewer, console)


@router.post("/api-keys")
async def create_api_key(request: Request, viewer: ViewerDep, form: FormDep, console: ConsoleDep) -> Response:
    merchant_id = _merchant(viewer)
    mode: Mode = "live" if form.get("mode") == "live" else "test"
    async with console.runtime.db.transaction() as transaction:
        key = await issue_key(transaction, merchant_id, mode, viewer.actor(), viewer.origin)
    return await _page(request, viewer, console, new_key=key)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_api_key(
    request: Request,
    key_id: Annotated[str, Path(min_length=1, max_length=64)],
    viewer: ViewerDep,
    _checked: FormDep,  # the CSRF token, checked
    console: ConsoleDep,
) -> Response:
    merchant_id = _merchant(viewer)
    async with console.runtime.db.transaction() as transaction:
        revoked = await revoke_key(transaction, key_id, viewer.actor(), merchant_id=merchant_id, origin=viewer.origin)
    if revoked is None:
        raise NotFound(f"No such active API key: '{key_id}'", param="id")
    return console.redirect(request, viewer.session, f"{PREFIX}/api-keys", flash=("ok", f"Key {key_id} revoked."))
