"""Stripe's idempotency semantics (DESIGN.md section 6).

The first request with a key takes it, with a fingerprint of the request. A repeat with the same
fingerprint replays the stored status and body byte for byte; with another fingerprint it is refused
(400); while the first is still running it is refused (409). A key whose request died (crash, kill)
is taken over after ``stale_after_seconds``: the retry answers with the charge as it now stands.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from payorch.errors import IdempotencyInProgress, IdempotencyMismatch
from payorch.storage.idempotency import IdempotencyRecord


def fingerprint(method: str, path: str, body: Any, livemode: bool) -> bytes:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path} {livemode}\n{canonical}".encode()).digest()


@dataclass(frozen=True, slots=True)
class StoredReply:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The key's first request died; ``charge_id`` is what it had created, if anything."""

    charge_id: str | None


def judge(record: IdempotencyRecord, print_: bytes, *, stale_after_seconds: float) -> StoredReply | Abandoned:
    """What a repeat of an existing key gets: a replay, a takeover, or an error."""
    if record.fingerprint != print_:
        raise IdempotencyMismatch(
            "Keys for idempotent requests can only be used with the same parameters they were first used with."
        )
    if record.status == "completed" and record.response_status is not None and record.response_body is not None:
        return StoredReply(record.response_status, record.response_body)
    if record.locked_at < datetime.now(UTC) - timedelta(seconds=stale_after_seconds):
        return Abandoned(record.charge_id)
    raise IdempotencyInProgress(
        "A request with this Idempotency-Key is still being processed; retry after it completes."
    )


__all__ = ["Abandoned", "StoredReply", "fingerprint", "judge"]
