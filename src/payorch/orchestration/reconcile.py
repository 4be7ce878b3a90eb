"""The one reconciler: resumes whatever a crash or a lost answer left open, for every aggregate.

Each aggregate's recovery (``payments.charge_recovery`` for charge attempts, ``payments.refunds``
for refunds) finds its own due work, leases it with ``FOR UPDATE SKIP LOCKED`` (so several workers
can run at once and never take the same item), asks the gateway, and applies the answer through
its lifecycle. The reconciler runs them in turn, on one schedule, and owns the lookup backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from payorch.orchestration.config import ReconcilerConfig

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    object_id: str
    """The attempt (or refund) decided on."""
    charge_id: str
    action: str
    """resolved, rescheduled, review, reversed, reversal_failed, skipped"""


class Recovery(Protocol):
    """One aggregate's part of reconciliation."""

    async def recover_due(self) -> list[Decision]:
        """Resolve what is due now; one decision per item taken."""
        ...


def next_check_delay(config: ReconcilerConfig, check_count: int) -> float:
    """Seconds until an inconclusive lookup is tried again: doubling, at least 1 s, at most an hour."""
    return max(1.0, min(MAX_BACKOFF_SECONDS, config.first_check_seconds * 2.0**check_count))


class Reconciler:
    def __init__(self, recoveries: Sequence[Recovery], config: ReconcilerConfig) -> None:
        self._recoveries = list(recoveries)
        self._config = config

    async def run_once(self) -> list[Decision]:
        """Every recovery once; what was decided."""
        decisions: list[Decision] = []
        for recovery in self._recoveries:
            try:
                decisions.extend(await recovery.recover_due())
            except Exception:
                log.exception("reconciler round failed (%s)", type(recovery).__name__)
        return decisions

    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._config.interval_seconds)
