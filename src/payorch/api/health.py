"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from payorch.api.deps import RuntimeDep
from payorch.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Dependencies (database, Redis) are reachable",
    responses={503: {"description": "A dependency is unavailable"}},
)
async def readyz(runtime: RuntimeDep) -> Any:
    checks = await runtime.ready()
    down = sorted(name for name, state in checks.items() if state != "ok")
    body: dict[str, Any] = {"status": "unavailable" if down else "ok", "checks": checks}
    if down:
        body["message"] = f"Unavailable: {', '.join(down)}."
    return JSONResponse(body, status_code=503 if down else 200)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    await runtime.refresh_gauges()
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
