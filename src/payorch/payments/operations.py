"""The one runner every idempotent POST goes through (docs/architecture.md), with Stripe's
idempotency semantics (DESIGN.md section 6).

1. **Open**: the operation writes its first rows and their audit events, taking the request's
   ``Idempotency-Key`` in the same write. When the key exists, that write wrote nothing:
   - the same parameters and a stored reply: the reply again, byte for byte (``Idempotent-Replayed``);
   - other parameters: 400; still running: 409;
   - its request died (in progress longer than ``stale_after_seconds``): this request takes the
     key over, under the key's row lock, and **resumes** the object the first request created
     (never a second one), or opens afresh if it created nothing.
2. **Execute**: the gateway call, through the executor (timeouts, classification, failover).
3. **Close**: the outcome becomes a state and a reply; rows, stored reply and audit events are
   written together.
Anything left open by a crash is found by the one reconciler, which calls each aggregate's
recovery (``orchestration/reconcile.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from payorch import jsontext
from payorch.errors import ApiError, IdempotencyInProgress, IdempotencyMismatch
from payorch.payments.config import IdempotencyConfig
from payorch.security.api_keys import Caller
from payorch.storage import idempotency as keys
from payorch.storage.database import Database
from payorch.storage.idempotency import IdempotencyRecord, KeyExists, KeyRequest
from payorch.storage.sql import Connection


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer as stored for idempotent replay: status and exact body bytes."""

    status: int
    body: bytes
    replayed: bool = False


def reply(status: int, payload: Mapping[str, Any]) -> Reply:
    """The one serializer of answers, stored or not (compact UTF-8 JSON)."""
    return Reply(status, jsontext.dumps(payload))


def error_reply(error: ApiError, request_id: str) -> Reply:
    return reply(error.status, error.body(request_id))


def fingerprint(method: str, path: str, body: Any, livemode: bool) -> bytes:
    """What makes two requests "the same parameters": method, path, mode and the canonical body."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path} {livemode}\n{canonical}".encode()).digest()


P = TypeVar("P")
O = TypeVar("O")  # noqa: E741 - the opened operation
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class OperationRequest(Generic[P]):
    caller: Caller
    params: P
    request_id: str
    key: KeyRequest | None
    """The request's Idempotency-Key with its fingerprint; None when it sent none."""

    @property
    def idempotency_key(self) -> str | None:
        return None if self.key is None else self.key.key


class Operation(Protocol[P, O, R]):
    """One payment operation on the runner: a small class, one module."""

    async def open(self, request: OperationRequest[P]) -> O | KeyExists | Reply:
        """Write the first rows and audit events, taking ``request.key`` in the same write. The key's
        record when it exists (nothing written); a Reply when there is nothing to execute."""
        ...

    async def resume(self, connection: Connection, request: OperationRequest[P], object_id: str | None) -> O | Reply:
        """The key was taken over (locked in ``connection``'s transaction): carry on with
        ``object_id``, the object its first request created, or open afresh when it made none. A
        Reply when that object is final already (store it for the key too)."""
        ...

    async def execute(self, opened: O) -> R:
        """Call the gateway; never raise for what the gateway did."""
        ...

    async def close(self, request: OperationRequest[P], opened: O, result: R) -> Reply:
        """Turn the result into a state and a reply; write them with the stored reply and audit events."""
        ...


@dataclass(frozen=True, slots=True)
class _Abandoned:
    object_id: str | None


class OperationRunner:
    def __init__(self, db: Database, config: IdempotencyConfig) -> None:
        self._db = db
        self._stale_after = timedelta(seconds=config.stale_after_seconds)

    def request(
        self,
        caller: Caller,
        params: P,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: Any,
        path: str,
        method: str = "POST",
    ) -> OperationRequest[P]:
        key = None
        if idempotency_key is not None:
            request_fingerprint = fingerprint(method, path, raw_body, caller.livemode)
            key = KeyRequest(caller.merchant_id, idempotency_key, request_fingerprint, method, path)
        return OperationRequest(caller, params, request_id, key)

    async def run(self, operation: Operation[P, O, R], request: OperationRequest[P]) -> Reply:
        opened = await operation.open(request)
        if isinstance(opened, Reply):
            return opened
        if isinstance(opened, KeyExists):
            taken = await self._take_over(operation, request, opened.record)
            if isinstance(taken, Reply):
                return taken
            opened = taken
        result = await operation.execute(opened)
        return await operation.close(request, opened, result)

    async def _take_over(
        self, operation: Operation[P, O, R], request: OperationRequest[P], seen: IdempotencyRecord | None
    ) -> O | Reply:
        key = request.key
        if key is None:
            raise RuntimeError("an operation without an idempotency key found its key taken")
        if seen is not None:  # what the first write saw: a replay or a refusal needs no lock
            verdict = self._judge(seen, key)
            if isinstance(verdict, Reply):
                return verdict
        async with self._db.transaction() as tx:
            current = await keys.lock(tx, key.merchant_id, key.key)
            if current is None:  # purged between the two statements: take it afresh
                await keys.take(tx, key, None)
                return await operation.resume(tx, request, None)
            verdict = self._judge(current, key)
            if isinstance(verdict, Reply):
                return verdict
            await keys.relock(tx, key.merchant_id, key.key, None)
            return await operation.resume(tx, request, verdict.object_id)

    def _judge(self, record: IdempotencyRecord, key: KeyRequest) -> Reply | _Abandoned:
        """What a repeat of an existing key gets: a replay or a takeover; else an error."""
        if record.fingerprint != key.fingerprint:
            raise IdempotencyMismatch(
                "Keys for idempotent requests can only be used with the same parameters they were first used with."
            )
        if record.status == "completed" and record.response_status is not None and record.response_body is not None:
            return Reply(record.response_status, record.response_body, replayed=True)
        if record.locked_at < datetime.now(UTC) - self._stale_after:
            return _Abandoned(record.object_id)
        raise IdempotencyInProgress(
            "A request with this Idempotency-Key is still being processed; retry after it completes."
        )


async def store_reply(connection: Connection, request: OperationRequest[Any], answer: Reply, object_id: str) -> None:
    """Store a final answer for the request's key, in the caller's transaction (a resumed object
    found final)."""
    if request.key is not None:
        await keys.complete(
            connection,
            request.key.merchant_id,
            request.key.key,
            status=answer.status,
            body=answer.body,
            object_id=object_id,
        )


__all__ = ["Operation", "OperationRequest", "OperationRunner", "Reply", "error_reply", "fingerprint", "reply"]
