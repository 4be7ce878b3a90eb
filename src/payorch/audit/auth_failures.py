"""Failed authentications on the audit trail, bounded in volume (PCI DSS 10.2.1.4).

Each refused API key is counted in a window of ``window_seconds`` per key prefix (the key's mode and
lookup id, never its secret; or ``missing`` / ``malformed``) and client IP. The first failure of a
window is written at once, as ``authentication.failed``; the others of that window become one
``authentication.failures`` event with their ``count`` when the window closes. Past ``keys_per_ip``
prefixes for one IP in one window (random keys) the rest are counted under ``*``. A flood from one
address thus writes at most ``2 * (keys_per_ip + 1)`` events a window, and the counts add up to the
number of refused requests.

The windows live in Redis when one is configured (every API process counts in the same window),
in this process otherwise, and in this process whenever Redis fails or is slow (logged, counted):
a refused key is answered 401 whatever happens to its audit event, never 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import structlog

from payorch.audit import trail
from payorch.audit.config import RefusalAuditConfig
from payorch.audit.events import Origin
from payorch.audit.failure_windows import ClosedWindow, FailureWindows, MemoryWindows, WindowHit
from payorch.audit.refusals import RefusalAudit

logger = structlog.stdlib.get_logger(__name__)

_KIND = "authentication"


@dataclass(frozen=True, slots=True)
class FailedAuthentication:
    """Why a presented API key was refused, and which key it named (never its secret)."""

    reason: str
    """``missing``, ``malformed``, ``unknown_key``, ``invalid_secret`` or ``revoked``."""
    key_prefix: str
    """``test:<lookup id>`` / ``live:<lookup id>`` for a well-formed key, else ``missing`` or ``malformed``."""
    merchant_id: str | None = None
    key_id: str | None = None
    """The merchant and id of the key the lookup id found (a wrong secret, a revoked key)."""


class AuthFailureAudit:
    """Counts failed authentications in windows and writes their bounded audit events."""

    def __init__(
        self,
        recorder: RefusalAudit,
        config: RefusalAuditConfig,
        *,
        shared: FailureWindows | None = None,
        on_fallback: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._config = config
        self._shared = shared
        self._local = MemoryWindows(config.keys_per_ip)
        self._on_fallback = on_fallback
        self._clock = clock
        self._flusher: asyncio.Task[None] | None = None

    async def failed(self, failure: FailedAuthentication, origin: Origin) -> None:
        """Count one refused key; write its event when it opens a window. Never raises."""
        try:
            window = int(self._clock() // self._config.window_seconds)
            ip = _ip_label(origin.ip)
            first = {**asdict(failure), "request_id": origin.request_id}
            hit = await self._hit(window, ip, failure.key_prefix, first)
            self.start()
            if hit.count == 1:
                event = trail.authentication_failed(
                    origin,
                    reason=failure.reason,
                    key_prefix=failure.key_prefix,
                    merchant_id=failure.merchant_id,
                    key_id=failure.key_id,
                    window_start=self._window_start(window),
                    window_seconds=self._config.window_seconds,
                    counted_as=None if hit.key_prefix == failure.key_prefix else hit.key_prefix,
                )
                await self._recorder.record(event, kind=_KIND)
        except Exception:  # the 401 goes out regardless
            logger.exception("failed authentication not audited")

    async def flush(self, *, everything: bool = False) -> int:
        """Write the summary of every closed window (``everything``: this process's open ones too,
        at shutdown); the number of summaries written."""
        current = int(self._clock() // self._config.window_seconds)
        closed = await self._local.take_closed(current + 1 if everything else current)
        if self._shared is not None:
            try:
                async with asyncio.timeout(self._config.write_timeout_seconds):
                    closed += await self._shared.take_closed(current)
            except Exception as exc:  # read on a later flush, by this process or another
                logger.warning("closed failed-authentication windows not read from Redis", error=type(exc).__name__)
        written = 0
        for window in closed:
            if window.count > 1 and await self._summarise(window):
                written += 1
        return written

    def start(self) -> None:
        """Look for closed windows every ``flush_interval_seconds`` (started by the first failure,
        and by the worker, which so writes the summaries of API processes that went away)."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever(), name="audit-authentication-summaries")

    async def aclose(self) -> None:
        """Stop looking, and write the summaries of every window this process still holds."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        with contextlib.suppress(Exception):
            await self.flush(everything=True)
        await self._recorder.drain()

    async def _hit(self, window: int, ip: str, key_prefix: str, first: dict[str, Any]) -> WindowHit:
        if self._shared is not None:
            try:
                async with asyncio.timeout(self._config.write_timeout_seconds):
                    return await self._shared.hit(window, ip, key_prefix, first)
            except Exception as exc:  # Redis down or slow: counted here instead
                logger.warning("failed authentication counted in process: Redis failed", error=type(exc).__name__)
                if self._on_fallback is not None:
                    self._on_fallback()
        return await self._local.hit(window, ip, key_prefix, first)

    async def _summarise(self, window: ClosedWindow) -> bool:
        event = trail.authentication_failures(
            None if window.ip == "unknown" else window.ip,
            key_prefix=window.key_prefix,
            count=window.count - 1,
            window_start=self._window_start(window.window),
            window_seconds=self._config.window_seconds,
            first=window.first,
        )
        return await self._recorder.record(event, kind=_KIND)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._config.flush_interval_seconds)
            try:
                await self.flush()
            except Exception:
                logger.exception("writing failed-authentication summaries failed")

    def _window_start(self, window: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(window * self._config.window_seconds, dt.UTC)


def _ip_label(ip: str | None) -> str:
    """The client IP as a window's name: a valid address in its canonical form, else ``unknown``
    (the address comes from the socket or a trusted proxy, but a window name must stay small)."""
    if not ip:
        return "unknown"
    try:
        return str(ipaddress.ip_address(ip.strip()))
    except ValueError:
        return "unknown"
