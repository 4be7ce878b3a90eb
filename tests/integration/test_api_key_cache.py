"""The API key cache: concurrent requests that find a key's entry missing share one database read."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event
from tests.factories import create_merchant

from payorch.runtime import Runtime
from payorch.security.api_keys import KeyAuthenticator


async def test_concurrent_misses_share_one_read_that_a_departing_request_does_not_cancel(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    authenticator = KeyAuthenticator(runtime.sessions, cache_seconds=60)
    reads: list[str] = []

    @event.listens_for(runtime.engine.sync_engine, "before_cursor_execute")
    def _count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "api_keys" in statement:
            reads.append(statement)

    try:
        callers = await asyncio.gather(*(authenticator.authenticate(merchant.key) for _ in range(50)))
        assert {c.merchant_id if c else None for c in callers} == {merchant.id}
        assert len(reads) == 1
        # A request that goes away mid-read does not fail the others waiting on the same read.
        other = KeyAuthenticator(runtime.sessions, cache_seconds=60)
        first = asyncio.create_task(other.authenticate(merchant.key))
        second = asyncio.create_task(other.authenticate(merchant.key))
        await asyncio.sleep(0)
        first.cancel()
        caller = await second
        assert caller is not None
        assert caller.merchant_id == merchant.id
        assert first.cancelled()
        assert len(reads) == 2
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", _count)
