"""Audit (operators): each sink's cursor and lag, its last verification, and verifying from the page.

Verifying is ``payorch audit verify`` (``audit/verify.py``): each readable sink re-read and its hash
chain recomputed against the database's. Each run is kept (``audit_verifications``) and is itself an
audit event, written in one transaction.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from payorch.audit.events import AuditAction, AuditEvent, Resource, record_many
from payorch.audit.verify import verify_configured
from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import PREFIX, Console, ConsoleDep, FormDep, Viewer, ViewerDep
from payorch.errors import PermissionDenied
from payorch.storage import audit as audit_repo

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
    runtime = console.runtime
    settings = runtime.settings
    results = await verify_configured(settings.audit, data_dir=settings.data_dir, database_url=runtime.db.config.url)
    actor = viewer.actor().model_copy(update={"merchant_id": None})
    events = [
        AuditEvent(
            actor=actor,
            action=AuditAction.AUDIT_VERIFIED,
            resource=Resource(type="audit_sink", id=sink),
            outcome="success" if report.ok else "failure",
            origin=viewer.origin,
            details={"checked": report.checked, "last_seq": report.last_seq, "summary": report.summary()},
        )
        for sink, report in results.reports.items()
    ]
    async with runtime.db.transaction() as transaction:
        for sink, report in results.reports.items():
            await audit_repo.record_verification(
                transaction,
                sink=sink,
                ok=report.ok,
                checked=report.checked,
                last_seq=report.last_seq,
                summary=report.summary(),
                verified_by=actor.user or "dashboard",
            )
        await record_many(transaction, events)
    return results.ok, results.lines


@router.post("/audit/verify")
async def verify(request: Request, viewer: ViewerDep, _checked: FormDep, console: ConsoleDep) -> Response:
    _operator(viewer)
    ok, lines = await _verify(console, viewer)
    flash = ("ok" if ok else "error", "Verified: " + " · ".join(lines) if lines else "Nothing to verify.")
    return console.redirect(request, viewer.session, f"{PREFIX}/audit", flash=flash)
