"""Audit (operators): each sink's cursor and lag, its last verification, and verifying from the page.

Verifying is ``payorch audit verify`` (``audit/verify.py``): each readable sink re-read and its hash
chain recomputed against the database's. Each run, from here or from the command line, is kept
(``audit_verifications``) with its ``audit_trail.verified`` event, in one transaction.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from payorch.audit.verify import record_verification, verification_event, verify_configured
from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import PREFIX, Console, ConsoleDep, FormDep, Viewer, ViewerDep
from payorch.errors import PermissionDenied

router = APIRouter()


def _operator(viewer: Viewer) -> None:
    if not viewer.operator:
        raise PermissionDenied("Only operators see the audit trail's status.", code="operators_only")


@router.get("/audit")
async def audit(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    _operator(viewer)
    runtime = console.runtime
    sinks = await ConsoleReads(runtime.db).sinks(list(runtime.settings.audit.sink_kinds()))
    return console.page(request, viewer.session, "audit.html", title="Audit", viewer=viewer, sinks=sinks)


async def _verify(console: Console, viewer: Viewer) -> tuple[bool, list[str]]:
    """``payorch audit verify``, run by this person: the same reports and the same audit event, with
    the person and their request as its actor and origin."""
    runtime = console.runtime
    settings = runtime.settings
    results = await verify_configured(settings.audit, data_dir=settings.data_dir, database_url=runtime.db.config.url)
    actor = viewer.actor().model_copy(update={"merchant_id": None})
    event = verification_event(results, None).model_copy(update={"actor": actor, "origin": viewer.origin})
    async with runtime.db.transaction() as transaction:
        await record_verification(transaction, results, event)
    return results.ok, results.lines


@router.post("/audit/verify")
async def verify(request: Request, viewer: ViewerDep, _checked: FormDep, console: ConsoleDep) -> Response:
    _operator(viewer)
    ok, lines = await _verify(console, viewer)
    flash = ("ok" if ok else "error", "Verified: " + " · ".join(lines) if lines else "Nothing to verify.")
    return console.redirect(request, viewer.session, f"{PREFIX}/audit", flash=flash)
