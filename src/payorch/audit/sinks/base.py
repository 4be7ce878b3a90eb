"""The sink Protocol and its errors. A sink stores whole batches of chain links, durably and in a
form nobody (including us) can rewrite, and can read them all back for ``verify``."""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from payorch.audit.chain import ChainedEvent


class SinkError(Exception):
    """The sink could not take or return the batch now (outage, throttling, partial failure).
    The shipper keeps the sink's cursor and retries later with backoff."""


class SinkMisconfigured(SinkError):
    """The sink is reachable but must not be used as configured (no Object Lock, unknown channel)."""


class SinkUnsupported(SinkError):
    """The sink cannot do this operation (for example reading back from CloudTrail Lake)."""


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
    for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(ChainedEvent.from_json(line))
        except ValueError as exc:
            raise CorruptRecord(f"{location} line {number}", str(exc)) from exc
    return events
