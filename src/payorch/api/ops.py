"""The operations listener: ``/metrics``, ``/healthz`` and ``/readyz`` on a port of their own, so that
the metrics never sit on the API's public port (production) and ``payorch worker``, which serves no
API, can be scraped and health-checked too.

It is a second uvicorn server on the process's own event loop, sharing the process's ``Runtime``.
The process's main server (or the worker's own handlers) owns the signals; this one never installs
any, and is stopped by whoever started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator, Mapping

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from payorch.api.health import exposition, readiness
from payorch.runtime import Runtime
from payorch.settings import Settings

log = logging.getLogger("payorch.ops")

Jobs = Callable[[], Mapping[str, str]]
"""Each background job's state: ``running``, or why not (the worker's liveness)."""


def ops_app(runtime: Runtime, jobs: Jobs | None = None) -> Starlette:
    """``/healthz`` is 503 once any of ``jobs`` is not running; without jobs it says the process lives.

    With jobs (the worker) it also lists each audit sink. A sink that is down, hanging or
    misconfigured makes the status ``degraded`` but stays 200: this is a liveness answer, and a
    restart would neither fix a bucket nor a credential, while it would stop the webhook dispatcher
    and the reconciler that are working. ``payorch_audit_sink_up`` and the lag gauge are what to
    alert on (docs/audit.md, docs/operations.md).
    """

    async def healthz(_: Request) -> Response:
        if jobs is None:
            return JSONResponse({"status": "ok"})
        states = dict(jobs())
        stopped = sorted(name for name, state in states.items() if state != "running")
        body: dict[str, object] = {"status": "unavailable" if stopped else "ok", "jobs": states}
        sinks = runtime.audit_sink_health()
        if sinks is not None:
            body["audit_sinks"] = {name: health.as_dict() for name, health in sinks.items()}
            if not stopped and not all(health.healthy for health in sinks.values()):
                body["status"] = "degraded"
        return JSONResponse(body, status_code=503 if stopped else 200)

    async def readyz(_: Request) -> Response:
        body, status = await readiness(runtime)
        return JSONResponse(body, status_code=status)

    async def metrics(_: Request) -> Response:
        return await exposition(runtime)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process's main server or the worker handles SIGINT and SIGTERM


class OpsListener:
    def __init__(self, app: Starlette, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._app, self._host, self._port, self._reuse_port = app, host, port, reuse_port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_settings(cls, settings: Settings, runtime: Runtime, jobs: Jobs | None = None) -> OpsListener | None:
        port = settings.metrics_port
        if port is None:
            return None
        return cls(ops_app(runtime, jobs), settings.metrics.host, port, reuse_port=settings.metrics.reuse_port)

    async def start(self) -> None:
        """Bind (an address in use fails here, loudly) and serve in the background."""
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self._reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="ops-listener")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn offers a flag only
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it
        log.info("operations listener on %s:%d (/metrics, /healthz, /readyz)", self._host, self._port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, timeout=5)
