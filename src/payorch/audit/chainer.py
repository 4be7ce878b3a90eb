"""Chaining: committed outbox rows, in outbox order, get the next chain positions.

Chain rows are inserted and their outbox rows deleted in one transaction; the tip row is locked and
positions are a primary key, so even two chainers could not fork the chain. Positions are dense and
given here, not taken from the outbox's bigserial (sequence values have holes and commit out of
order): a row that commits late simply gets a later position.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from payorch.audit.chain import GENESIS_HASH, ChainedEvent, chained_body, link_hash
from payorch.storage import audit as audit_store
from payorch.storage.database import Database

_CHAIN_CHUNK = 1000


async def chain_pending(db: Database) -> int:
    """Chain every committed outbox row, a chunk per transaction; how many were chained."""
    total = 0
    while True:
        async with db.transaction() as transaction:
            rows = await audit_store.fetch_unchained(transaction, _CHAIN_CHUNK)
            if not rows:
                return total
            tip_seq, tip_hash = await audit_store.chain_tip(transaction)
            await audit_store.append_chain(transaction, _links(rows, tip_seq, tip_hash or GENESIS_HASH))
        total += len(rows)
        if len(rows) < _CHAIN_CHUNK:
            return total


def link_from_row(row: audit_store.ChainRow) -> ChainedEvent:
    """A chain row as sinks store it."""
    body = json.loads(row.canonical)
    return ChainedEvent(seq=row.seq, prev_hash=row.prev_hash, hash=row.hash, event=body["event"])


def _links(rows: Sequence[audit_store.OutboxRow], tip_seq: int, prev_hash: str) -> list[audit_store.ChainLink]:
    """The next chain positions for ``rows``, in outbox order, after the tip (``tip_seq``, ``prev_hash``)."""
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
    return links
