"""The dispatcher: events -> deliveries -> signed POSTs to merchant endpoints.

It LISTENs on the triggers' channel (a dedicated connection, reconnected when lost) and also
polls, so a lost NOTIFY delays nothing beyond one poll interval. Each round it fans new events out
to matching endpoints (``webhook_deliveries``, the outbox) and claims due deliveries with a lease
(``FOR UPDATE SKIP LOCKED``): any number of dispatchers share the work and never send one delivery at
once. A delivery is signed per Standard Webhooks, with ``webhook-id`` = the event id (stable across
retries and redeliveries), sent with a hard timeout, and retried with exponential backoff and jitter
until its retry window ends, then dead-lettered (``failed``) for an operator or merchant to redeliver.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import httpcore
import httpx

from payorch.storage import events as events_repo
from payorch.storage import webhooks as repo
from payorch.storage.database import Database
from payorch.storage.webhooks import ClaimedDelivery
from payorch.webhooks import signing, urls
from payorch.webhooks.config import WebhooksConfig
from payorch.webhooks.signing import SecretBox
from payorch.webhooks.transport import PinnedTransport

log = logging.getLogger(__name__)

OutcomeHook = Callable[[str], None]
"""Called once per attempt with its outcome: ``delivered``, ``retry`` or ``dead_lettered``."""

PING_SECONDS = 30.0

CONNECTION_FAILED = "connection_failed"
"""What a delivery records for every failure that is not an HTTP answer: refused, reset, timed out,
TLS, another protocol, an address we will not call. One word, so the deliveries listing cannot
tell a caller whether a port is open, closed or filtered; the detail goes to the operator's log."""

_TRANSPORT_ERRORS = (
    httpx.HTTPError,
    httpcore.NetworkError,
    httpcore.TimeoutException,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    OSError,  # ssl.SSLError and TimeoutError among them
)


def event_body(claimed: ClaimedDelivery) -> bytes:
    """What the merchant receives: the event with its snapshot, as compact JSON."""
    payload = {
        "id": claimed.delivery.event_id,
        "object": "event",
        "type": claimed.event_type,
        "created": int(claimed.event_created_at.timestamp()),
        # The event's place among its object's events (1, 2, ...): deliveries may arrive out of order.
        "sequence": claimed.event_sequence,
        "livemode": claimed.livemode,
        "data": {"object": claimed.event_payload},
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class Dispatcher:
    def __init__(
        self,
        db: Database,
        config: WebhooksConfig,
        box: SecretBox,
        *,
        on_outcome: OutcomeHook | None = None,
        resolver: urls.Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._db = db
        self._config = config
        self._box = box
        self._on_outcome = on_outcome
        self._guard = urls.UrlGuard.for_config(config, resolver)
        self._ssl_context = ssl_context
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests and health checks wait on it)."""

    @property
    def lease_seconds(self) -> float:
        return self._config.delivery_timeout_seconds + self._config.lease_margin_seconds

    # -- loops --------------------------------------------------------------------------------------

    async def run_forever(self, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        listener = asyncio.create_task(self._listen(stop, wake), name="webhook-listen") if self._config.listen else None
        inflight: set[asyncio.Task[None]] = set()
        async with self._client() as http:
            try:
                while not stop.is_set():
                    wake.clear()
                    try:
                        await self._fan_out()
                        free = self._config.concurrency - len(inflight)
                        for claimed in await self._claim(free) if free > 0 else []:
                            inflight.add(asyncio.create_task(self._deliver(http, claimed)))
                    except Exception:
                        log.exception("webhook dispatch round failed")
                    await self._idle(stop, wake, inflight)
                    inflight = {task for task in inflight if not task.done()}
            finally:
                if listener is not None:
                    listener.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await listener
                if inflight:  # let deliveries in flight finish; a cut one is resent after its lease
                    _, unfinished = await asyncio.wait(inflight, timeout=self._config.delivery_timeout_seconds + 1)
                    for task in unfinished:
                        task.cancel()

    async def run_once(self) -> int:
        """One round, waiting for its deliveries: fan out, claim what is due, send. Returns how many were sent."""
        await self._fan_out()
        async with self._client() as http:
            claimed = await self._claim(self._config.batch_size)
            await asyncio.gather(*(self._deliver(http, c) for c in claimed))
        return len(claimed)

    def _client(self) -> httpx.AsyncClient:
        transport = PinnedTransport(
            self._guard, max_connections=self._config.concurrency, ssl_context=self._ssl_context
        )
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._config.delivery_timeout_seconds),
            follow_redirects=False,
            trust_env=False,
        )

    async def _idle(self, stop: asyncio.Event, wake: asyncio.Event, inflight: set[asyncio.Task[None]]) -> None:
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
        try:
            await asyncio.wait(
                waiters | inflight, timeout=self._config.poll_interval_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _listen(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Hold a LISTEN connection; on loss, reconnect with backoff. Polling covers the gaps."""
        delay = 0.5
        while not stop.is_set():
            try:
                async with self._db.dedicated() as connection:
                    lost = asyncio.Event()
                    connection.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await connection.add_listener(events_repo.CHANNEL, lambda *_args: wake.set())
                    self.listening.set()
                    wake.set()  # whatever was written while we were not listening
                    delay = 0.5
                    while not stop.is_set() and not lost.is_set():
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(PING_SECONDS):
                                await _first(stop.wait(), lost.wait())
                        if not stop.is_set() and not lost.is_set():
                            await connection.execute("SELECT 1", timeout=5)  # a dead TCP peer shows up here
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("webhook LISTEN connection failed (%s); retrying in %.1fs", type(error).__name__, delay)
            finally:
                self.listening.clear()
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                delay = min(delay * 2, self._config.reconnect_max_seconds)

    # -- steps --------------------------------------------------------------------------------------

    async def _fan_out(self) -> None:
        while True:
            async with self._db.connection() as connection:
                result = await events_repo.fan_out(
                    connection,
                    limit=self._config.batch_size,
                    retry_window_seconds=self._config.retry_window_hours * 3600,
                )
            if result.events < self._config.batch_size:
                return

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        async with self._db.connection() as connection:
            return await repo.claim_due(connection, limit=limit, lease_seconds=self.lease_seconds)

    def _secrets(self, claimed: ClaimedDelivery) -> list[str]:
        live = [self._box.open(claimed.secret_ciphertext)]
        expires = claimed.previous_secret_expires_at
        if claimed.previous_secret_ciphertext is not None and expires is not None and expires > datetime.now(UTC):
            live.append(self._box.open(claimed.previous_secret_ciphertext))
        return live

    async def _deliver(self, http: httpx.AsyncClient, claimed: ClaimedDelivery) -> None:
        started = datetime.now(UTC)
        status_code, detail = await self._send(http, claimed)
        if status_code is not None and 200 <= status_code < 300:
            await self._record_success(claimed, status_code)
            return
        if status_code is not None:
            await self._record_failure(claimed, status_code, f"HTTP {status_code}", detail, not_before=started)
            return
        # However quickly or slowly it failed, the next attempt is scheduled as if it had taken the
        # whole timeout: its time must not tell a closed port from a filtered one either.
        not_before = started + timedelta(seconds=self._config.delivery_timeout_seconds)
        await self._record_failure(claimed, None, CONNECTION_FAILED, detail, not_before=not_before)

    async def _send(self, http: httpx.AsyncClient, claimed: ClaimedDelivery) -> tuple[int | None, str]:
        """One signed POST: (the HTTP status, "") or (None, what went wrong, for the log)."""
        delivery = claimed.delivery
        try:
            body = event_body(claimed)
            headers = signing.headers(self._secrets(claimed), delivery.event_id, int(time.time()), body)
            urls.parse(claimed.url, livemode=claimed.livemode)  # the rules may be newer than the endpoint
            async with (
                asyncio.timeout(self._config.delivery_timeout_seconds),
                http.stream("POST", claimed.url, content=body, headers=headers) as response,
            ):
                return response.status_code, ""  # the body is never read
        except urls.RefusedUrl as refused:
            return None, f"refused: {refused.detail}"
        except TimeoutError:
            return None, f"no answer within {self._config.delivery_timeout_seconds:g} s"
        except _TRANSPORT_ERRORS as failure:
            return None, f"{type(failure).__name__}: {failure}"
        except Exception as failure:  # never let one delivery kill the loop
            log.exception("delivery %s failed unexpectedly", delivery.id)
            return None, type(failure).__name__

    async def _record_success(self, claimed: ClaimedDelivery, status_code: int) -> None:
        delivery = claimed.delivery
        async with self._db.connection() as connection:
            await repo.mark_delivered(connection, delivery.merchant_id, delivery.id, status_code)
        log.info("delivered %s (%s) to endpoint %s", delivery.event_id, claimed.event_type, delivery.endpoint_id)
        self._observe("delivered")

    async def _record_failure(
        self, claimed: ClaimedDelivery, status_code: int | None, error: str, detail: str, *, not_before: datetime
    ) -> None:
        delivery = claimed.delivery
        now = max(datetime.now(UTC), not_before)
        next_at = self.next_attempt_at(delivery.attempts, delivery.give_up_after, now)
        async with self._db.connection() as connection:
            status = await repo.mark_failed_attempt(
                connection,
                delivery.merchant_id,
                delivery.id,
                attempts=delivery.attempts,
                status_code=status_code,
                error=error,
                next_attempt_at=next_at,
            )
        why = f"{error} ({detail})" if detail else error
        if status == "failed":
            log.warning(
                "delivery %s to endpoint %s dead-lettered after %d attempts: %s",
                delivery.id, delivery.endpoint_id, delivery.attempts, why,
            )  # fmt: skip
            self._observe("dead_lettered")
        else:
            log.info(
                "delivery %s to endpoint %s attempt %d failed: %s; retrying",
                delivery.id, delivery.endpoint_id, delivery.attempts, why,
            )  # fmt: skip
            self._observe("retry")

    def next_attempt_at(self, attempts: int, give_up_after: datetime, now: datetime) -> datetime | None:
        """Exponential backoff with equal jitter, capped; None once the retry window is over. The
        last retry lands on the window's end, so every delivery is tried for the whole window."""
        if now >= give_up_after:
            return None
        ceiling = min(
            self._config.retry_max_interval_seconds,
            self._config.retry_base_seconds * 2 ** min(max(attempts - 1, 0), 40),
        )
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not a secret
        return min(now + timedelta(seconds=delay), give_up_after)

    def _observe(self, outcome: str) -> None:
        if self._on_outcome is not None:
            try:
                self._on_outcome(outcome)
            except Exception:
                log.exception("webhook outcome hook failed")


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
