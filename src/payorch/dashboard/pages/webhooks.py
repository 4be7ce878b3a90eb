"""Webhooks: the merchant's endpoints in both modes, their recent deliveries, and dead letters."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from payorch.dashboard.reads import ConsoleReads
from payorch.dashboard.web import ConsoleDep, ViewerDep

router = APIRouter()


@router.get("/webhooks")
async def webhooks(request: Request, viewer: ViewerDep, console: ConsoleDep) -> Response:
    runtime = console.runtime
    endpoints, deliveries, dead = [], {}, []
    if viewer.merchant_id is not None:
        service = runtime.webhooks.endpoints
        for livemode in (False, True):
            endpoints += await service.list_endpoints(viewer.caller(livemode=livemode))
        reads = ConsoleReads(runtime.db)
        deliveries = await reads.endpoint_deliveries(viewer.merchant_id, endpoints)
        dead = await reads.dead_letters(viewer.merchant_id)
    return console.page(
        request,
        viewer.session,
        "webhooks.html",
        title="Webhooks",
        viewer=viewer,
        endpoints=endpoints,
        deliveries=deliveries,
        dead_letters=dead,
    )
