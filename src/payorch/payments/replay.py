"""Idempotency-Key handling for POSTs other than charges (refunds, payment methods), with the same
semantics as charges (DESIGN.md section 6, payments/idempotency.py): the key's row records the id of
the object its first request created, so a retry after a crash resumes that object, never a second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payorch.payments import idempotency
from payorch.payments.service import Reply
from payorch.storage import idempotency as idem_repo


@dataclass(frozen=True, slots=True)
class Resume:
    """The key's first request died after creating ``object_id``: carry on with that object."""

    object_id: str


async def take_key(
    session: AsyncSession,
    merchant_id: str,
    key: str,
    print_: bytes,
    path: str,
    *,
    stale_after_seconds: float,
) -> Reply | Resume | None:
    """Take ``key`` for this request. None: the key is ours, run the request. A :class:`Reply`: answer
    it (a replay). :class:`Resume`: the key is ours again and its first request's object exists.
    Raises the idempotency errors (other parameters: 400; still running: 409)."""
    if await idem_repo.try_take(
        session, merchant_id=merchant_id, key=key, fingerprint=print_, method="POST", path=path
    ):
        return None
    record = await idem_repo.get(session, merchant_id, key, for_update=True)
    if record is None:  # purged between the two statements: take it afresh
        await idem_repo.try_take(
            session, merchant_id=merchant_id, key=key, fingerprint=print_, method="POST", path=path
        )
        return None
    verdict = idempotency.judge(record, print_, stale_after_seconds=stale_after_seconds)
    if isinstance(verdict, idempotency.StoredReply):
        return Reply(verdict.status, verdict.body, replayed=True)
    await idem_repo.relock(session, merchant_id, key)
    return None if verdict.charge_id is None else Resume(verdict.charge_id)


async def attach(session: AsyncSession, merchant_id: str, key: str, object_id: str) -> None:
    """Remember which object the key's request created (the key row's ``charge_id`` column holds the
    id of whatever object it created: a charge, a refund, a payment method)."""
    await idem_repo.attach_charge(session, merchant_id, key, object_id)


async def complete(session: AsyncSession, merchant_id: str, key: str, reply: Reply, object_id: str | None) -> None:
    """Store the final answer for replay, in the caller's transaction."""
    await idem_repo.complete(session, merchant_id, key, status=reply.status, body=reply.body, charge_id=object_id)


def dumps(payload: dict[str, Any]) -> bytes:
    """The exact bytes an answer is sent (and stored for replay) as."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
