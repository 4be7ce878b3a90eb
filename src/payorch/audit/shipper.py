"""The audit shipper: outbox -> hash chain -> every sink, each at its own pace (DESIGN.md section 8).

One holder at a time: the shipper takes ``pg_try_advisory_lock`` on a dedicated connection (outside
the pool) and keeps it while it runs; any number of ``payorch worker`` processes may start one, the
others wait.

Each round:
1. chain: committed outbox rows, in outbox order, get the next chain positions; chain rows are
   inserted and the outbox rows deleted in one transaction (the tip row is locked, and positions are
   a primary key, so even two holders could not fork the chain);
2. ship: for every sink, the links after that sink's cursor are sent in batches of ``batch_size``
   (a partial batch once its oldest event is ``max_batch_age`` old), and the cursor advances only
   after the sink accepted the batch. A failing sink keeps its cursor and is retried after an
   exponential backoff; the other sinks carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chained_body, link_hash
from payorch.audit.config import DEFAULT_LOCK_KEY, AuditConfig
from payorch.audit.sinks import build_sinks
from payorch.audit.sinks.base import AuditSink, SinkMisconfigured
from payorch.storage import audit as audit_store
from payorch.storage.database import DATABASE_ERRORS, Database
from payorch.storage.sql import Connection

logger = structlog.stdlib.get_logger(__name__)

_CHAIN_CHUNK = 1000
_MAX_BATCHES_PER_ROUND = 50


@dataclass(frozen=True, slots=True)
class ShipperMetrics:
    """Optional callbacks, so the Prometheus wiring stays in ``observability/metrics.py``."""

    on_shipped: Callable[[str, int], None] | None = None
    """(sink name, events shipped in one batch)"""
    on_failed: Callable[[str, int], None] | None = None
    """(sink name, events in the batch that failed)"""
    on_lag: Callable[[str, float], None] | None = None
    """(sink name, age in seconds of its oldest unshipped event; 0 when caught up)"""


@dataclass(slots=True)
class RoundReport:
    lock_acquired: bool = True
    chained: int = 0
    shipped: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    """sink name -> the error that kept its cursor where it was"""


@dataclass(slots=True)
class _SinkState:
    checked: bool = False
    failures: int = 0
    retry_at: float = 0.0


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
        metrics: ShipperMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        names = [sink.name for sink in sinks]
        if len(set(names)) != len(names):
            raise ValueError(f"audit sink names must be unique: {names}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._db = db
        self._sinks = list(sinks)
        self._batch_size = batch_size
        self._max_batch_age = max_batch_age
        self._lock_key = lock_key
        self._poll_interval = poll_interval
        self._backoff = (backoff_initial, backoff_max)
        self._metrics = metrics or ShipperMetrics()
        self._clock = clock
        self._state = {sink.name: _SinkState() for sink in self._sinks}
        self._lock_conn: Connection | None = None
        self._lock_exit = contextlib.AsyncExitStack()  # closes the dedicated connection

    @property
    def sinks(self) -> list[AuditSink]:
        return list(self._sinks)

    async def check_sinks(self) -> None:
        """Check every sink once at start. A misconfigured sink (S3 bucket without Object Lock)
        raises ``SinkMisconfigured``; a sink that is merely down is checked again before use."""
        for sink in self._sinks:
            try:
                await sink.check()
            except SinkMisconfigured:
                raise
            except Exception as exc:
                logger.warning("audit sink unavailable at start", sink=sink.name, error=str(exc))
            else:
                self._state[sink.name].checked = True

    async def run_once(self, *, force: bool = False) -> RoundReport:
        """One round under the lock. ``force`` ships partial batches now and ignores backoff."""
        async with self._holding_lock() as held:
            if not held:
                return RoundReport(lock_acquired=False)
            return await self._round(force=force)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Ship until ``stop`` is set, then make a last forced round and release the lock."""
        await self.check_sinks()
        try:
            while not stop.is_set():
                busy = False
                try:
                    if await self._acquire_lock():
                        report = await self._round(force=False)
                        busy = report.chained > 0 or any(report.shipped.values())
                except _ROUND_ERRORS as exc:
                    logger.warning("audit shipper round failed", error=str(exc))
                    await self._release_lock()
                if not busy:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self._poll_interval)
            if self._lock_conn is not None:
                with contextlib.suppress(*_ROUND_ERRORS):
                    await self._round(force=True)
        finally:
            await self._release_lock()

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

    # -- a round --------------------------------------------------------------------------------

    async def _round(self, *, force: bool) -> RoundReport:
        report = RoundReport()
        report.chained = await self._chain_pending()
        async with self._db.connection() as connection:
            await audit_store.ensure_cursors(connection, [sink.name for sink in self._sinks])
        # Concurrently, so a sink that is slow to fail does not hold the others back.
        outcomes = await asyncio.gather(
            *(self._ship(sink, report, force=force) for sink in self._sinks), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return report

    async def _chain_pending(self) -> int:
        total = 0
        while True:
            async with self._db.transaction() as transaction:
                rows = await audit_store.fetch_unchained(transaction, _CHAIN_CHUNK)
                if not rows:
                    return total
                tip_seq, tip_hash = await audit_store.chain_tip(transaction)
                prev_hash = tip_hash or GENESIS_HASH
                links: list[audit_store.ChainLink] = []
                for seq, row in enumerate(rows, start=tip_seq + 1):
                    body = chained_body(seq, row.payload)
                    digest = link_hash(prev_hash, body)
                    links.append(
                        audit_store.ChainLink(
                            seq=seq,
                            event_id=row.event_id,
                            outbox_seq=row.seq,
                            occurred_at=row.occurred_at,
                            recorded_at=row.created_at,
                            prev_hash=prev_hash,
                            hash=digest,
                            canonical=body.decode("utf-8"),
                        )
                    )
                    prev_hash = digest
                await audit_store.append_chain(transaction, links)
            total += len(rows)
            if len(rows) < _CHAIN_CHUNK:
                return total

    async def _ship(self, sink: AuditSink, report: RoundReport, *, force: bool) -> None:
        state = self._state[sink.name]
        if not force and self._clock() < state.retry_at:
            return
        shipped = 0
        for _ in range(_MAX_BATCHES_PER_ROUND):
            async with self._db.connection() as connection:
                cursor = (await audit_store.get_cursors(connection)).get(sink.name, 0)
                rows = await audit_store.chain_after(connection, cursor, self._batch_size)
                lag = await audit_store.unshipped_lag(connection, cursor)
            if not rows:
                break
            if len(rows) < self._batch_size and not force and lag < self._max_batch_age:
                break
            batch = [_link_from_row(row) for row in rows]
            try:
                if not state.checked:
                    await sink.check()
                    state.checked = True
                await sink.put_batch(batch)
            except Exception as exc:
                self._sink_failed(sink.name, state, len(batch), exc)
                report.failed[sink.name] = str(exc) or type(exc).__name__
                break
            async with self._db.connection() as connection:
                if not await audit_store.advance_cursor(connection, sink.name, from_seq=cursor, to_seq=rows[-1].seq):
                    raise ShipperLostCursor(f"cursor of sink {sink.name} moved while shipping")
            state.failures, state.retry_at = 0, 0.0
            shipped += len(batch)
            if self._metrics.on_shipped is not None:
                self._metrics.on_shipped(sink.name, len(batch))
        report.shipped[sink.name] = shipped
        if self._metrics.on_lag is not None:
            async with self._db.connection() as connection:
                cursor = (await audit_store.get_cursors(connection)).get(sink.name, 0)
                self._metrics.on_lag(sink.name, await audit_store.unshipped_lag(connection, cursor))

    def _sink_failed(self, name: str, state: _SinkState, count: int, exc: Exception) -> None:
        state.failures += 1
        initial, ceiling = self._backoff
        delay = min(ceiling, initial * 2 ** (state.failures - 1))
        state.retry_at = self._clock() + delay * (0.5 + random.random() / 2)  # noqa: S311 (jitter)
        if isinstance(exc, SinkMisconfigured):
            state.checked = False
        logger.warning(
            "audit sink failed; cursor kept", sink=name, events=count, failures=state.failures, error=str(exc)
        )
        if self._metrics.on_failed is not None:
            self._metrics.on_failed(name, count)


def _link_from_row(row: audit_store.ChainRow) -> ChainedEvent:
    body = json.loads(row.canonical)
    return ChainedEvent(seq=row.seq, prev_hash=row.prev_hash, hash=row.hash, event=body["event"])


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
        metrics=metrics,
    )
