"""Liveness, readiness and Prometheus metrics: on the API's port, and on the operations listener
(``api/ops.py``), where ``/metrics`` lives in production."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from payorch.api.deps import RuntimeDep
from payorch.observability.metrics import CONTENT_TYPE
from payorch.runtime import Runtime

router = APIRouter(tags=["health"])
metrics_router = APIRouter(tags=["health"])
"""``/metrics`` on the API's port: mounted only when ``settings.metrics_on_api_port``."""


async def readiness(runtime: Runtime) -> tuple[dict[str, Any], int]:
    """What /readyz answers: each dependency's state, and 503 when one is down."""
    checks = await runtime.ready()
    down = sorted(name for name, state in checks.items() if state != "ok")
    body: dict[str, Any] = {"status": "unavailable" if down else "ok", "checks": checks}
    if down:
        body["message"] = f"Unavailable: {', '.join(down)}."
    return body, 503 if down else 200


async def exposition(runtime: Runtime) -> Response:
    """The Prometheus text exposition, shared state read fresh for this scrape."""
    await runtime.refresh_gauges()
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz", operation_id="check_liveness", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="check_readiness",
    summary="Dependencies (database, Redis) are reachable",
    responses={503: {"description": "A dependency is unavailable"}},
)
async def readyz(runtime: RuntimeDep) -> Any:
    body, status = await readiness(runtime)
    return JSONResponse(body, status_code=status)


@metrics_router.get(
    "/metrics",
    operation_id="get_metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {"schema": {"type": "string"}}}}},
)
async def metrics(runtime: RuntimeDep) -> Response:
    return await exposition(runtime)
