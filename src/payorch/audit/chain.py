"""Canonical JSON and the SHA-256 hash chain.

``hash_n = sha256(prev_hash_n || canonical({"seq": n, "event": event_n}))`` where ``prev_hash_n`` is
the previous link's hash as 64 lower-case hex characters (ASCII), and the first link's is 64 zeros.
Canonical JSON: keys sorted, no whitespace, UTF-8, no NaN/Infinity. Putting ``seq`` inside the hashed
body binds every event to its chain position, so a reorder breaks the chain even when contents match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> bytes:
    """The one byte form that is hashed: sorted keys, compact separators, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def chained_body(seq: int, event: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one chain link's content: the event bound to its position."""
    return canonical_json({"seq": seq, "event": event})


def link_hash(prev_hash: str, body: bytes) -> str:
    """sha256(prev_hash || body) as lower-case hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + body).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainedEvent:
    """One link of the chain as sinks store it: position, both hashes and the redacted event."""

    seq: int
    prev_hash: str
    hash: str
    event: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.event.get("id", ""))

    @property
    def occurred_at(self) -> str:
        return str(self.event.get("occurred_at", ""))

    def to_json(self) -> str:
        """One JSON line (canonical, so a re-shipped batch is byte-identical)."""
        record = {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash, "event": self.event}
        return canonical_json(record).decode("utf-8")

    @classmethod
    def from_json(cls, line: str | bytes) -> ChainedEvent:
        """Parse one stored line; ``ValueError`` when it is not a chain record."""
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError("audit record is not a JSON object")
        seq, prev_hash, digest, event = (record.get(k) for k in ("seq", "prev_hash", "hash", "event"))
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise ValueError("audit record has no integer seq")
        if not isinstance(prev_hash, str) or not isinstance(digest, str) or not isinstance(event, dict):
            raise ValueError(f"audit record {seq} lacks prev_hash, hash or event")
        return cls(seq=seq, prev_hash=prev_hash, hash=digest, event=event)


def chain_events(prev_hash: str, first_seq: int, events: Iterable[Mapping[str, Any]]) -> list[ChainedEvent]:
    """Link ``events`` after the link whose hash is ``prev_hash``, numbering from ``first_seq``."""
    links: list[ChainedEvent] = []
    for offset, event in enumerate(events):
        seq = first_seq + offset
        digest = link_hash(prev_hash, chained_body(seq, event))
        links.append(ChainedEvent(seq=seq, prev_hash=prev_hash, hash=digest, event=dict(event)))
        prev_hash = digest
    return links
