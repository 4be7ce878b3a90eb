"""A circuit breaker per gateway account (DESIGN.md section 5), kept in process.

Each account has its own: a platform account's by its name, a merchant's own by its id, so one
merchant's refused key opens its own account's breaker and no other merchant's on the same gateway.

Each gateway's breaker keeps the calls of the last ``window_seconds``. Once the window holds at least
``minimum_calls``, the breaker opens when the share of failures reaches ``failure_rate`` or the share
of slow calls reaches ``slow_call_rate``. An open breaker turns its gateway away at once (the
executor records a ``NOT_SENT`` attempt with code ``breaker_open`` and pays no timeout). After
``open_seconds`` it lets ``half_open_probes`` calls through: one failure (or slow call) among them
opens it again, that many successes close it.

What counts:

- failure: ``NOT_SENT`` (the gateway refused or could not be reached) and ``UNKNOWN`` (it did not
  answer clearly). A decline is the card's answer, not the gateway's health: never a failure; nor is
  a request the gateway refused as invalid (a bad token: ``GatewayResult.request_refused``), or one
  merchant's bad tokens would turn the gateway away for every merchant.
- slow: any answered call that took at least ``slow_call_fraction`` of the gateway's timeout.

Each process keeps its own breakers: an API replica decides from the calls it made itself. That is
deliberate: a breaker must react within a few calls, and a shared store would add a round trip to
every charge and a new way to fail.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from pydantic import BaseModel, Field

from payorch.gateways.base import Outcome


class BreakerConfig(BaseModel):
    """Circuit-breaker thresholds, the same for every gateway (``PAYORCH_BREAKER__*``)."""

    enabled: bool = True
    window_seconds: float = Field(default=30.0, gt=0)
    """Only calls this recent count."""
    minimum_calls: int = Field(default=10, ge=1)
    """Below this many calls in the window the breaker never opens."""
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Open when at least this share of the window's calls failed (not sent or unknown)."""
    slow_call_rate: float = Field(default=0.8, gt=0, le=1)
    """Open when at least this share of the window's calls were slow."""
    slow_call_fraction: float = Field(default=0.8, gt=0, le=1)
    """A call is slow when it took at least this share of its gateway's timeout."""
    open_seconds: float = Field(default=15.0, gt=0)
    """How long an open breaker turns calls away before letting probes through."""
    half_open_probes: int = Field(default=3, ge=1)
    """Calls let through while half-open; that many successes close the breaker."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


FAILURES = frozenset({Outcome.NOT_SENT, Outcome.UNKNOWN})


@dataclass(slots=True)
class _Call:
    at: float
    failed: bool
    slow: bool


@dataclass(slots=True)
class _Breaker:
    slow_after: float
    state: BreakerState = BreakerState.CLOSED
    calls: deque[_Call] = field(default_factory=deque)
    failures: int = 0
    """How many of ``calls`` failed, and how many were slow: kept as calls come and go, so a
    decision costs the same with 10 calls in the window as with 10,000."""
    slow_calls: int = 0
    opened_at: float = 0.0
    probes_granted: int = 0
    probes_passed: int = 0
    probe_granted_at: float = 0.0


class CircuitBreakers:
    """Implements the executor's ``Breakers`` protocol for every configured gateway.

    ``timeouts`` maps each gateway name to its timeout in seconds (for the slow-call threshold).
    ``clock`` is a monotonic clock in seconds; it is a parameter so the state machine can be
    exercised without waiting.
    """

    def __init__(
        self,
        config: BreakerConfig,
        timeouts: Mapping[str, float],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers = {name: _Breaker(slow_after=t * config.slow_call_fraction) for name, t in timeouts.items()}
        self._platform = tuple(timeouts)

    def track(self, account: str, timeout: float) -> None:
        """Give ``account`` (a merchant's, built on first use) a breaker of its own, if it has none."""
        with self._lock:
            if account not in self._breakers:
                self._breakers[account] = _Breaker(slow_after=timeout * self._config.slow_call_fraction)

    def forget(self, account: str) -> None:
        with self._lock:
            self._breakers.pop(account, None)

    def is_open(self, gateway: str) -> bool:
        """Whether calls to ``gateway`` are turned away now (half-open is not: it grants probes).
        Unlike :meth:`allows` this hands out no probe, so routing may ask it of every account."""
        return self._config.enabled and self.state(gateway) is BreakerState.OPEN

    def allows(self, gateway: str) -> bool:
        """Whether a call to ``gateway`` may go out now (a half-open breaker hands out probe permits)."""
        if not self._config.enabled:
            return True
        with self._lock:
            breaker = self._breakers.get(gateway)
            if breaker is None:
                return True
            now = self._clock()
            self._advance(breaker, now)
            if breaker.state is BreakerState.CLOSED:
                return True
            if breaker.state is BreakerState.OPEN:
                return False
            if breaker.probes_granted < self._config.half_open_probes:
                breaker.probes_granted += 1
                breaker.probe_granted_at = now
                return True
            return False

    def record(self, gateway: str, outcome: Outcome, seconds: float, *, refused: bool = False) -> None:
        """Count one finished call to ``gateway`` that took ``seconds``. ``refused``: the gateway
        answered, refusing this request as invalid (``GatewayResult.request_refused``): not a failure."""
        if not self._config.enabled:
            return
        with self._lock:
            breaker = self._breakers.get(gateway)
            if breaker is None:
                return
            now = self._clock()
            failed = outcome in FAILURES and not refused
            slow = seconds >= breaker.slow_after
            if breaker.state is BreakerState.HALF_OPEN:
                self._record_probe(breaker, now, failed or slow)
            elif breaker.state is BreakerState.CLOSED:
                breaker.calls.append(_Call(now, failed, slow))
                breaker.failures += failed
                breaker.slow_calls += slow
                self._evaluate(breaker, now)
            # OPEN: a call that started before the breaker opened finished late; it changes nothing.

    def state(self, gateway: str) -> BreakerState:
        with self._lock:
            breaker = self._breakers.get(gateway)
            if breaker is None:
                return BreakerState.CLOSED
            self._advance(breaker, self._clock())
            return breaker.state

    def states(self) -> dict[str, str]:
        """The platform accounts' states (closed, half_open, open), for ``payorch_gateway_breaker_state``;
        merchants' own accounts are left out of the metric (one label value per account would grow without bound)."""
        return {name: self.state(name).value for name in self._platform}

    # -- state machine (called with the lock held) --------------------------------------------------

    def _advance(self, breaker: _Breaker, now: float) -> None:
        """Move time-driven transitions along: open -> half-open; forgotten probes handed out again."""
        if breaker.state is BreakerState.OPEN and now - breaker.opened_at >= self._config.open_seconds:
            self._half_open(breaker)
        elif (
            breaker.state is BreakerState.HALF_OPEN
            and breaker.probes_granted > breaker.probes_passed
            and now - breaker.probe_granted_at >= self._config.open_seconds
        ):
            # A probe that never reported (its request was cancelled): let another one through.
            breaker.probes_granted = breaker.probes_passed

    def _evaluate(self, breaker: _Breaker, now: float) -> None:
        horizon = now - self._config.window_seconds
        while breaker.calls and breaker.calls[0].at < horizon:
            gone = breaker.calls.popleft()
            breaker.failures -= gone.failed
            breaker.slow_calls -= gone.slow
        total = len(breaker.calls)
        if total < self._config.minimum_calls:
            return
        if (
            breaker.failures / total >= self._config.failure_rate
            or breaker.slow_calls / total >= self._config.slow_call_rate
        ):
            self._open(breaker, now)

    def _record_probe(self, breaker: _Breaker, now: float, bad: bool) -> None:
        if bad:
            self._open(breaker, now)
            return
        breaker.probes_passed += 1
        if breaker.probes_passed >= self._config.half_open_probes:
            breaker.state = BreakerState.CLOSED
            _forget_calls(breaker)

    @staticmethod
    def _open(breaker: _Breaker, now: float) -> None:
        breaker.state = BreakerState.OPEN
        breaker.opened_at = now
        _forget_calls(breaker)

    @staticmethod
    def _half_open(breaker: _Breaker) -> None:
        breaker.state = BreakerState.HALF_OPEN
        breaker.probes_granted = 0
        breaker.probes_passed = 0


def _forget_calls(breaker: _Breaker) -> None:
    breaker.calls.clear()
    breaker.failures = breaker.slow_calls = 0
