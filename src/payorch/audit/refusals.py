"""The audit events of refused requests: a refund over the refundable amount, a capture of a
captured charge, an unknown API key (PCI DSS 10.2.1.2, 10.2.1.4).

A refused request's own transaction rolls back, so its event is written in a short transaction of
its own, after that rollback and on a connection of its own. The write is bounded by a timeout and
never raises: a request is answered with its refusal whether or not the event could be written; a
lost event is logged (its action and resource, nothing more) and counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from payorch.audit.events import AuditEvent, record
from payorch.storage.database import Database

logger = structlog.stdlib.get_logger(__name__)


class RefusalAudit:
    """Writes one audit event in a transaction of its own; ``kind`` names it in the failure count."""

    def __init__(
        self, db: Database, *, timeout: float = 2.0, on_write_failed: Callable[[str], None] | None = None
    ) -> None:
        self._db = db
        self._timeout = timeout
        self._on_write_failed = on_write_failed
        self._writing: set[asyncio.Task[bool]] = set()

    async def record(self, event: AuditEvent, *, kind: str) -> bool:
        """Write ``event``; False (logged, counted) when it could not be written in time. Shielded: a
        client that goes away while its refusal is being recorded does not cancel the write."""
        task = asyncio.ensure_future(self._write(event, kind))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for the writes still running (at shutdown)."""
        if self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)

    async def _write(self, event: AuditEvent, kind: str) -> bool:
        try:
            async with asyncio.timeout(self._timeout), self._db.transaction() as transaction:
                await record(transaction, event)
        except Exception as exc:  # the request's answer must not depend on its audit write
            logger.warning(
                "audit event of a refused request not written",
                kind=kind,
                action=event.action,
                resource=event.resource.type,
                event_id=event.id,
                error=type(exc).__name__,
            )
            if self._on_write_failed is not None:
                self._on_write_failed(kind)
            return False
        return True
