"""The API key cache: concurrent requests that find a key's entry missing share one database read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.factories import create_merchant

from payorch.runtime import Runtime
from payorch.security.api_keys import KeyAuthenticator
from payorch.storage.database import Database
from payorch.storage.sql import Connection


class CountingDatabase(Database):
    """The real pool, counting checkouts: the authenticator's only use of it is reading a key."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reads = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        self.reads += 1
        async with super().connection() as connection:
            yield connection


async def test_concurrent_misses_share_one_read_that_a_departing_request_does_not_cancel(runtime: Runtime) -> None:
    merchant = await create_merchant(runtime)
    db = CountingDatabase(runtime.db.config)
    try:
        authenticator = KeyAuthenticator(db, cache_seconds=60)
        callers = await asyncio.gather(*(authenticator.authenticate(merchant.key) for _ in range(50)))
        assert {c.merchant_id if c else None for c in callers} == {merchant.id}
        assert db.reads == 1
        # A request that goes away mid-read does not fail the others waiting on the same read.
        other = KeyAuthenticator(db, cache_seconds=60)
        first = asyncio.create_task(other.authenticate(merchant.key))
        second = asyncio.create_task(other.authenticate(merchant.key))
        await asyncio.sleep(0)
        first.cancel()
        caller = await second
        assert caller is not None
        assert caller.merchant_id == merchant.id
        assert first.cancelled()
        assert db.reads == 2
    finally:
        await db.close()
