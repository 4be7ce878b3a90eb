"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from payorch.api.deps import RuntimeDep

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
    ok = all(state == "ok" for state in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
