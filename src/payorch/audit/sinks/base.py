"""The sink Protocol and its errors. A sink stores whole batches of chain links, durably and in a
form nobody (including us) can rewrite, and can read them all back for ``verify``."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from payorch.audit.chain import ChainedEvent


class SinkError(Exception):
    """The sink could not take or return the batch now (outage, throttling, partial failure).
    The shipper keeps the sink's cursor and retries later with backoff."""


class SinkMisconfigured(SinkError):
    """The sink is reachable but must not be used as configured (no Object Lock, unknown channel)."""


class SinkUnsupported(SinkError):
    """The sink cannot do this operation (for example reading back from CloudTrail Lake)."""


class SinkBusy(SinkError):
    """The sink's previous call has not returned yet (it hangs): nothing was sent this time."""


class CorruptRecord(SinkError):
    """A stored record is not a chain link at all; ``location`` says where it is."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = location


@runtime_checkable
class AuditSink(Protocol):
    """Where chained audit events are shipped.

    ``put_batch`` receives links in chain order, contiguous, and may be called again with the same
    or an overlapping batch after a failure: it must then not store an event twice where the
    store cannot tell (CloudTrail) and must store identical bytes where it can (files, objects).
    """

    name: str

    async def check(self) -> None:
        """Raise ``SinkMisconfigured`` when the sink must not be used; ``SinkError`` when it is down."""
        ...

    async def put_batch(self, events: list[ChainedEvent]) -> None:
        """Store ``events`` durably or raise ``SinkError``."""
        ...

    async def read_all(self) -> list[ChainedEvent]:
        """Every stored link, in stored order (batch by chain position, then line order)."""
        ...


T = TypeVar("T")


class SinkThread:
    """Runs one sink's blocking calls (boto3, file I/O) on threads of its own.

    A call that hangs (an endpoint that accepts the connection and never answers) holds only this
    sink's thread: never the event loop's default executor, which DNS lookups and the other sinks
    share. Once the shipper stops waiting for a hung call (its timeout), further calls are refused at
    once (``SinkBusy``) until the hung one returns on its own (the client's read timeout), so hung
    calls never pile up. The threads are daemons: a hung call does not hold the process at exit.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._abandoned = 0
        """Calls still running whose caller stopped waiting."""

    async def run(self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            if self._abandoned:
                raise SinkBusy(f"{self._name}: an earlier call has not returned yet")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        call = _Call(loop, future)
        thread = threading.Thread(
            target=self._call, args=(call, function, args, kwargs), name=f"audit-sink-{self._name}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError as exc:  # no thread could be started
            raise SinkError(f"{self._name}: {exc}") from exc
        try:
            return await call.future
        except asyncio.CancelledError:
            with self._lock:
                if not call.returned:
                    call.abandoned = True
                    self._abandoned += 1
            raise

    def _call(self, call: _Call[T], function: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            outcome: tuple[T | None, BaseException | None] = (function(*args, **kwargs), None)
        except BaseException as exc:  # handed to the waiting coroutine, which raises it
            outcome = (None, exc)
        with self._lock:
            call.returned = True
            if call.abandoned:
                self._abandoned -= 1
                return
        try:
            call.loop.call_soon_threadsafe(_settle, call.future, outcome)
        except RuntimeError:  # the loop is closed: nobody waits for this answer any more
            pass


@dataclass(slots=True)
class _Call(Generic[T]):
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    returned: bool = False
    abandoned: bool = False


def _settle(future: asyncio.Future[T], outcome: tuple[T | None, BaseException | None]) -> None:
    if future.done():  # the waiter was cancelled
        return
    result, error = outcome
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


_BATCH_NAME = re.compile(r"(\d{12,})-(\d{12,})\.jsonl$")


def batch_name(events: list[ChainedEvent]) -> str:
    """``000000000001-000000000500.jsonl``: zero-padded so names sort in chain order."""
    return f"{events[0].seq:012d}-{events[-1].seq:012d}.jsonl"


def parse_batch_name(name: str) -> tuple[int, int] | None:
    match = _BATCH_NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def encode_batch(events: list[ChainedEvent]) -> bytes:
    return "".join(event.to_json() + "\n" for event in events).encode("utf-8")


def decode_batch(location: str, body: bytes) -> list[ChainedEvent]:
    events: list[ChainedEvent] = []
    # One event per "\n" only: a JSON line holds no raw "\n", but may hold U+2028, U+0085 or a form
    # feed inside a string (a merchant's free text), where str.splitlines() would also break.
    for number, line in enumerate(body.decode("utf-8", "replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append(ChainedEvent.from_json(line))
        except ValueError as exc:
            raise CorruptRecord(f"{location} line {number}", str(exc)) from exc
    return events
