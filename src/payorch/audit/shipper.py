"""The audit shipper: outbox -> hash chain -> every sink, each on its own (DESIGN.md section 8).

One holder at a time: the shipper takes ``pg_try_advisory_lock`` on a dedicated connection (outside
the pool) and keeps it while it runs; any number of ``payorch worker`` processes may start one, the
others wait.

While it holds the lock, independent loops run side by side:
- the chainer (``audit/chainer.py``), which never waits on a sink;
- one loop per sink: the links after that sink's cursor are sent in batches of ``batch_size`` (a
  partial batch once its oldest event is ``max_batch_age`` old), and the cursor advances only after
  the sink accepted the batch. Every sink call is bounded by ``sink_timeout``; a failing, hanging or
  misconfigured sink keeps its cursor and is retried after its own exponential backoff (bounded,
  with jitter, reset on success), and the other sinks and the chainer carry on.
A sink that is misconfigured at start (a missing bucket, a refused credential, Object Lock off) is
reported unhealthy (``health()``, ``ShipperMetrics.on_health``) and retried like any other failure:
its events wait in the chain and ship once it is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from payorch.audit.chainer import chain_pending, link_from_row
from payorch.audit.config import DEFAULT_LOCK_KEY, AuditConfig
from payorch.audit.sink_health import SinkHealth, SinkTracker
from payorch.audit.sinks import build_sinks
from payorch.audit.sinks.base import AuditSink, SinkError, SinkMisconfigured
from payorch.storage import audit as audit_store
from payorch.storage.database import DATABASE_ERRORS, Database
from payorch.storage.sql import Connection

logger = structlog.stdlib.get_logger(__name__)

_MAX_BATCHES_PER_ROUND = 50
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ShipperMetrics:
    """Optional callbacks, so the Prometheus wiring stays in ``observability/metrics.py``."""

    on_shipped: Callable[[str, int], None] | None = None
    """(sink name, events shipped in one batch)"""
    on_failed: Callable[[str, int], None] | None = None
    """(sink name, events in the batch that failed)"""
    on_lag: Callable[[str, float], None] | None = None
    """(sink name, age in seconds of its oldest unshipped event; 0 when caught up)"""
    on_health: Callable[[str, bool], None] | None = None
    """(sink name, whether it is up): on every change, and once per sink at start"""


@dataclass(slots=True)
class RoundReport:
    lock_acquired: bool = True
    chained: int = 0
    shipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """sink name -> the error that kept its cursor where it was"""


class ShipperLostCursor(RuntimeError):
    """Another shipper moved a cursor under us: the advisory lock was lost. Stop this round."""


_ROUND_ERRORS: tuple[type[Exception], ...] = (*DATABASE_ERRORS, ShipperLostCursor)
"""What ends a round without ending the shipper: the lock is given up and taken again later."""


class AuditShipper:
    """Chains outbox rows and ships them to ``sinks``, holding the lock on a dedicated connection."""

    def __init__(
        self,
        db: Database,
        sinks: Sequence[AuditSink],
        batch_size: int = 500,
        max_batch_age: float = 5.0,
        *,
        lock_key: int = DEFAULT_LOCK_KEY,
        poll_interval: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        sink_timeout: float = 30.0,
        metrics: ShipperMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"audit sink names must be unique: {names}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if sink_timeout <= 0:
            raise ValueError("sink_timeout must be positive")
        self._db = db
        self._sinks = list(sinks)
        self._batch_size = batch_size
        self._max_batch_age = max_batch_age
        self._lock_key = lock_key
        self._poll_interval = poll_interval
        self._sink_timeout = sink_timeout
        self._metrics = metrics or ShipperMetrics()
        self._clock = clock
        self._state = {sink.name: SinkTracker(sink.name, backoff_initial, backoff_max) for sink in self._sinks}
        self._lock_conn: Connection | None = None
        self._lock_exit = contextlib.AsyncExitStack()  # closes the dedicated connection

    @property
    def sinks(self) -> list[AuditSink]:
        return list(self._sinks)

    def health(self) -> dict[str, SinkHealth]:
        """Each sink's state, last error, backoff and lag, as this process last saw them."""
        now = self._clock()
        return {name: tracker.snapshot(now) for name, tracker in self._state.items()}

    async def check_sinks(self) -> None:
        """Check every sink once: raise ``SinkMisconfigured`` for the first misconfigured one (a
        preflight for operators); one that is merely down is checked again before use. ``run_forever``
        does not stop on either: it reports them and retries."""
        for sink in self._sinks:
            try:
                await self._bounded(sink, "check", sink.check())
            except SinkMisconfigured as exc:
                self._sink_failed(sink.name, 0, exc)
                raise
            except Exception as exc:
                self._sink_failed(sink.name, 0, exc)
            else:
                self._sink_ok(sink.name)

    async def run_once(self, *, force: bool = False) -> RoundReport:
        """One round under the lock: chain, then ship to every sink concurrently (each call bounded
        by the sink timeout). ``force`` ships partial batches now and ignores backoff."""
        async with self._holding_lock() as held:
            if not held:
                return RoundReport(lock_acquired=False)
            return await self._round(force=force)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Chain and ship until ``stop`` is set, then make a last forced round and release the lock.
        Never stops for a sink: a misconfigured or hanging one is reported and retried."""
        try:
            while not stop.is_set():
                if not await self._hold_and_ship(stop):
                    await asyncio.gather(*(self._check(s) for s in self._sinks if self._due_for_check(s)))
                    await _pause([stop], self._poll_interval)
            if self._lock_conn is not None:
                with contextlib.suppress(*_ROUND_ERRORS):
                    await self._round(force=True)
        finally:
            await self._release_lock()

    async def _hold_and_ship(self, stop: asyncio.Event) -> bool:
        """Ship while holding the lock; False when another holds it or a database error ended the run."""
        failed: BaseException | None = None
        try:
            if not await self._acquire_lock():
                return False
            await self._run_held(stop)
        except* _ROUND_ERRORS as errors:
            failed = errors.exceptions[0]
        if failed is not None:
            logger.warning("audit shipper round failed", error=str(failed))
            await self._release_lock()
            return False
        return True

    # -- lock -----------------------------------------------------------------------------------

    async def _acquire_lock(self) -> bool:
        if self._lock_conn is not None:
            await audit_store.ping(self._lock_conn)
            return True
        async with contextlib.AsyncExitStack() as stack:
            connection = await stack.enter_async_context(self._db.dedicated())
            if not await audit_store.try_advisory_lock(connection, self._lock_key):
                return False
            self._lock_conn, self._lock_exit = connection, stack.pop_all()
        logger.info("audit shipper holds the lock")
        return True

    async def _release_lock(self) -> None:
        connection, self._lock_conn = self._lock_conn, None
        if connection is None:
            return
        with contextlib.suppress(*DATABASE_ERRORS):
            await audit_store.advisory_unlock(connection, self._lock_key)
        with contextlib.suppress(*DATABASE_ERRORS):
            await self._lock_exit.aclose()

    @contextlib.asynccontextmanager
    async def _holding_lock(self) -> AsyncIterator[bool]:
        if self._lock_conn is not None:
            yield True
            return
        acquired = await self._acquire_lock()
        try:
            yield acquired
        finally:
            if acquired:
                await self._release_lock()

    # -- while holding the lock: the chainer and one loop per sink --------------------------------

    async def _run_held(self, stop: asyncio.Event) -> None:
        """Until ``stop``, or until a database error (the TaskGroup then cancels every loop)."""
        async with self._db.connection() as connection:
            await audit_store.ensure_cursors(connection, [sink.name for sink in self._sinks])
        async with asyncio.TaskGroup() as group:
            group.create_task(self._chain_loop(stop), name="audit-chainer")
            for sink in self._sinks:
                group.create_task(self._sink_loop(sink, stop), name=f"audit-sink-{sink.name}")

    async def _chain_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._lock_conn is None:
                return
            await audit_store.ping(self._lock_conn)  # still ours: a lost connection ends the round
            if await chain_pending(self._db):
                for tracker in self._state.values():
                    tracker.wake.set()
            await _pause([stop], self._poll_interval)

    async def _sink_loop(self, sink: AuditSink, stop: asyncio.Event) -> None:
        tracker = self._state[sink.name]
        while not stop.is_set():
            tracker.wake.clear()
            shipped = await _unless_stopped(stop, self._ship(sink, RoundReport(), force=False))
            if shipped is not None and shipped >= self._batch_size * _MAX_BATCHES_PER_ROUND:
                continue  # more is waiting: no pause
            waiting = tracker.retry_at - self._clock()
            if waiting > 0:
                await _pause([stop], min(waiting, self._poll_interval))
            else:
                await _pause([stop, tracker.wake], self._poll_interval)

    # -- a round (run_once, and the last one at stop) ----------------------------------------------

    async def _round(self, *, force: bool) -> RoundReport:
        report = RoundReport()
        report.chained = await chain_pending(self._db)
        async with self._db.connection() as connection:
            await audit_store.ensure_cursors(connection, [sink.name for sink in self._sinks])
        outcomes = await asyncio.gather(
            *(self._ship(sink, report, force=force) for sink in self._sinks), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return report

    async def _ship(self, sink: AuditSink, report: RoundReport, *, force: bool) -> int:
        """Ship what is ready for ``sink``; the number of events it accepted."""
        tracker = self._state[sink.name]
        shipped = 0
        if force or self._clock() >= tracker.retry_at:
            shipped = await self._ship_batches(sink, tracker, report, force=force)
            report.shipped[sink.name] = shipped
        async with self._db.connection() as connection:
            cursor = (await audit_store.get_cursors(connection)).get(sink.name, 0)
            tracker.lag = await audit_store.unshipped_lag(connection, cursor)
        if self._metrics.on_lag is not None:
            self._metrics.on_lag(sink.name, tracker.lag)
        return shipped

    async def _ship_batches(self, sink: AuditSink, tracker: SinkTracker, report: RoundReport, *, force: bool) -> int:
        shipped, sent = 0, False
        just_checked = not tracker.checked
        if just_checked and not await self._check(sink, report, settle=False):
            return 0
        for _ in range(_MAX_BATCHES_PER_ROUND):
            async with self._db.connection() as connection:
                cursor = (await audit_store.get_cursors(connection)).get(sink.name, 0)
                rows = await audit_store.chain_after(connection, cursor, self._batch_size)
                lag = await audit_store.unshipped_lag(connection, cursor)
            if not rows or (len(rows) < self._batch_size and not force and lag < self._max_batch_age):
                break
            batch, sent = [link_from_row(row) for row in rows], True
            try:
                await self._bounded(sink, "put_batch", sink.put_batch(batch))
            except Exception as exc:  # whatever a sink raises is that sink's failure, never the shipper's
                self._sink_failed(sink.name, len(batch), exc)
                report.failed[sink.name] = str(exc) or type(exc).__name__
                break
            async with self._db.connection() as connection:
                if not await audit_store.advance_cursor(connection, sink.name, from_seq=cursor, to_seq=rows[-1].seq):
                    raise ShipperLostCursor(f"cursor of sink {sink.name} moved while shipping")
            self._sink_ok(sink.name)
            shipped += len(batch)
            if self._metrics.on_shipped is not None:
                self._metrics.on_shipped(sink.name, len(batch))
        if just_checked and not sent:  # nothing to send: the check is all the evidence there is
            self._sink_ok(sink.name)
        return shipped

    # -- one sink's calls, health and backoff ------------------------------------------------------

    async def _check(self, sink: AuditSink, report: RoundReport | None = None, *, settle: bool = True) -> bool:
        """Check ``sink``. ``settle``: a success marks it up; otherwise the batch that follows decides
        (a check that passes is no evidence for a sink whose puts fail, such as CloudTrail's)."""
        try:
            await self._bounded(sink, "check", sink.check())
        except Exception as exc:
            self._sink_failed(sink.name, 0, exc)
            if report is not None:
                report.failed[sink.name] = str(exc) or type(exc).__name__
            return False
        self._state[sink.name].checked = True
        if settle:
            self._sink_ok(sink.name)
        return True

    def _due_for_check(self, sink: AuditSink) -> bool:
        """A sink this process does not ship to (another holds the lock) is still checked while it
        is unhealthy, so each worker's health shows when it recovers."""
        tracker = self._state[sink.name]
        return not tracker.checked and self._clock() >= tracker.retry_at

    async def _bounded(self, sink: AuditSink, what: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._sink_timeout):
                return await call
        except TimeoutError as exc:
            raise SinkError(f"{sink.name}: {what} did not answer within {self._sink_timeout:g} s") from exc

    def _sink_ok(self, name: str) -> None:
        if self._state[name].succeeded():
            logger.info("audit sink up", sink=name)
            self._report_health(name, up=True)

    def _sink_failed(self, name: str, count: int, exc: Exception) -> None:
        tracker = self._state[name]
        changed = tracker.failed(exc, self._clock())
        logger.warning(
            "audit sink failed; cursor kept",
            sink=name,
            state=tracker.state,
            events=count,
            failures=tracker.failures,
            error=tracker.error,
        )
        if changed:
            self._report_health(name, up=False)
        if count and self._metrics.on_failed is not None:
            self._metrics.on_failed(name, count)

    def _report_health(self, name: str, *, up: bool) -> None:
        if self._metrics.on_health is not None:
            self._metrics.on_health(name, up)


async def _pause(events: Iterable[asyncio.Event], seconds: float) -> None:
    """Until one of ``events`` is set, or ``seconds`` have passed."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, or None when ``stop`` was set first (``work`` is then cancelled: a batch
    a sink took but whose cursor did not move is shipped again, which every sink tolerates)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


def build_shipper(
    config: AuditConfig,
    db: Database,
    *,
    data_dir: Path,
    metrics: ShipperMetrics | None = None,
    boto_session: Any = None,
) -> AuditShipper:
    """The shipper the Runtime runs: sinks from ``config`` (embedded default: ``<data_dir>/audit``),
    batch, age, poll and backoff settings from ``config``. Builds clients only; checks nothing."""
    return AuditShipper(
        db,
        build_sinks(config, data_dir=data_dir, boto_session=boto_session),
        batch_size=config.batch_size,
        max_batch_age=config.max_batch_age_seconds,
        lock_key=config.lock_key,
        poll_interval=config.poll_interval_seconds,
        backoff_initial=config.backoff_initial_seconds,
        backoff_max=config.backoff_max_seconds,
        sink_timeout=config.sink_timeout_seconds,
        metrics=metrics,
    )
