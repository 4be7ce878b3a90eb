"""Each merchant's accounts and routing, as the charge path needs them: from a per-process cache.

A merchant's set-up is read in one statement and kept for ``cache_seconds``; every write
``pg_notify``s the merchant (storage/gateway_accounts.py) and :meth:`AccountDirectory.listen` drops
its entry in every process at once, so the TTL only bounds a lost notification. Concurrent misses
for one merchant share one read (single flight). Adapters are built once per account revision
(their HTTP clients reused across charges) and closed when the account changes or the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from payorch.accounts.crypto import KeyUnavailable, KeyWrapper, Sealed, unseal
from payorch.gateways.config import GatewayConfig
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import Configured, GatewayRegistry, build_gateway, plugin_for
from payorch.orchestration.breaker import CircuitBreakers
from payorch.orchestration.routing import Account, Fee, RoutingView
from payorch.orchestration.routing_rules import RoutingRules
from payorch.storage import gateway_accounts as repo
from payorch.storage.database import Database
from payorch.storage.gateway_accounts import AccountRow

log = logging.getLogger(__name__)

ACCOUNT_PREFIX = "ga_"
RETIRE_AFTER_SECONDS = 120.0
"""A replaced adapter is closed this long after its account changed: calls it began may finish."""


def is_account_id(key: str) -> bool:
    return key.startswith(ACCOUNT_PREFIX)


def context_of(row: AccountRow) -> dict[str, str]:
    """What a sealed credential is bound to: it opens only for this merchant's account."""
    return {"merchant_id": row.merchant_id, "account_id": row.id}


def sealed_of(row: AccountRow) -> Sealed:
    return Sealed(row.sealed_credentials, row.wrapped_key, row.wrap_key_id)


def account_of(row: AccountRow) -> Account:
    fees = {currency: Fee(**fee) for currency, fee in row.fees.items()}
    return Account(
        key=row.id,
        name=row.name,
        kind=row.kind,
        capabilities=plugin_for(row.kind).capabilities,
        enabled=row.enabled,
        livemode=row.livemode,
        fees=fees,
    )


@dataclass(slots=True)
class _Entry:
    views: dict[bool, RoutingView]
    """By livemode: that mode's own accounts, the platform's, that mode's rules."""
    rows: dict[str, AccountRow]
    loaded_at: float


class AccountDirectory:
    """The platform's accounts (the environment's gateways) and every merchant's own."""

    def __init__(
        self,
        db: Database,
        platform: GatewayRegistry,
        wrapper: KeyWrapper,
        services: GatewayServices,
        breakers: CircuitBreakers,
        *,
        cache_seconds: float,
        platform_order_by_currency: Mapping[str, list[str]],
        platform_fees: Mapping[str, Mapping[str, Fee]] | None = None,
    ) -> None:
        self._db = db
        self.platform = platform
        self.wrapper = wrapper
        self._services = services
        self._breakers = breakers
        self._ttl = cache_seconds
        self._order = platform_order_by_currency
        self._platform_accounts = tuple(
            Account(
                key=c.name,
                name=c.name,
                kind=c.config.kind,
                capabilities=c.capabilities,
                platform=True,
                fees=(platform_fees or {}).get(c.name, {}),
            )
            for c in platform
        )
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._adapters: dict[str, tuple[int, Configured]] = {}
        self._building: dict[str, asyncio.Future[Configured]] = {}
        self._retiring: dict[asyncio.Task[None], Configured] = {}

    # -- the charge path ---------------------------------------------------------------------------

    async def view(self, merchant_id: str, livemode: bool) -> RoutingView:
        """The merchant's accounts and rules in one mode (a database read at most once per cache period)."""
        return (await self._entry(merchant_id)).views[livemode]

    async def resolve(self, merchant_id: str, key: str) -> Configured | None:
        """The adapter of the account ``key`` names for this merchant: a platform account's name, or
        one of the merchant's own account ids (another merchant's is None), disabled or not. Raises
        KeyUnavailable when its credentials cannot be opened now."""
        if not is_account_id(key):
            return self.platform.get(key)
        row = (await self._entry(merchant_id)).rows.get(key)
        if row is None:
            return None
        return await self.configured(row)

    async def gateway(self, merchant_id: str, key: str) -> Configured | None:
        """``resolve`` for captures, refunds, lookups and reversals (``GatewayResolver``): credentials
        that cannot be opened now are an account not reachable now (the caller's not-sent path)."""
        try:
            return await self.resolve(merchant_id, key)
        except KeyUnavailable as error:
            log.error("account %s: credentials unavailable (%s)", key, error)
            return None

    async def names(self, merchant_id: str, livemode: bool) -> list[str]:
        return [account.name for account in (await self.view(merchant_id, livemode)).accounts]

    async def by_names(self, merchant_id: str, livemode: bool, names: list[str]) -> dict[str, Configured]:
        """Vault targets (``VaultAccounts``): the named accounts of this mode that are enabled and
        whose credentials open now, in routing order."""
        view = await self.view(merchant_id, livemode)
        targets = {}
        for account in view.accounts:
            if account.name not in names or not account.enabled:
                continue
            configured = await self.gateway(merchant_id, account.key)
            if configured is not None:
                targets[account.name] = configured
        return targets

    async def configured(self, row: AccountRow) -> Configured:
        """The account's adapter, built once per revision; raises KeyUnavailable when its
        credentials cannot be opened now."""
        cached = self._adapters.get(row.id)
        if cached is not None and cached[0] == row.revision:
            return cached[1]
        building = self._building.get(row.id)
        if building is not None:
            return await asyncio.shield(building)
        future: asyncio.Future[Configured] = asyncio.get_running_loop().create_future()
        self._building[row.id] = future
        try:
            built = await self._build(row)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: only the waiters re-raise it
            raise
        finally:
            del self._building[row.id]
        future.set_result(built)
        previous = self._adapters.get(row.id)
        self._adapters[row.id] = (row.revision, built)
        if previous is not None:
            self._retire(previous[1])
        return built

    async def _build(self, row: AccountRow) -> Configured:
        credentials = orjson.loads(await unseal(self.wrapper, sealed_of(row), context_of(row)))
        plugin = plugin_for(row.kind)
        config: GatewayConfig = plugin.config.model_validate(
            {**credentials, "name": row.id, "kind": row.kind, "timeout_ms": row.timeout_ms}
        )
        built = Configured(config, build_gateway(config, self._services))
        self._breakers.track(row.id, config.timeout)
        return built

    # -- notifications for one account --------------------------------------------------------------

    async def for_notification(self, account_id: str) -> tuple[str, Configured] | None:
        """The merchant and adapter of the account a notification path names; None if none."""
        if not is_account_id(account_id):
            return None
        async with self._db.connection() as connection:
            row = await repo.find_account(connection, account_id)
        if row is None:
            return None
        return row.merchant_id, await self.configured(row)

    # -- the cache ---------------------------------------------------------------------------------

    def invalidate(self, merchant_id: str) -> None:
        self._entries.pop(merchant_id, None)

    async def _entry(self, merchant_id: str) -> _Entry:
        entry = self._entries.get(merchant_id)
        if entry is not None and time.monotonic() - entry.loaded_at < self._ttl:
            return entry
        loading = self._loading.get(merchant_id)
        if loading is not None:
            return await asyncio.shield(loading)
        future: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[merchant_id] = future
        try:
            entry = await self._load(merchant_id)
        except BaseException as error:
            future.set_exception(error)
            future.exception()
            raise
        finally:
            del self._loading[merchant_id]
        future.set_result(entry)
        if self._ttl > 0:
            self._entries[merchant_id] = entry
        return entry

    async def _load(self, merchant_id: str) -> _Entry:
        started = time.monotonic()
        async with self._db.connection() as connection:
            rows, current = await repo.merchant_view(connection, merchant_id)
        # Names are unique per merchant across modes: its own replace the platform's in both.
        names = {row.name for row in rows}
        platform = tuple(account for account in self._platform_accounts if account.name not in names)
        views = {
            livemode: RoutingView(
                accounts=tuple(account_of(row) for row in rows if row.livemode == livemode) + platform,
                rules=None if routing is None else RoutingRules.model_validate(routing[1]),
                version=None if routing is None else routing[0],
                platform_order_by_currency=self._order,
            )
            for livemode, routing in current.items()
        }
        return _Entry(views, {row.id: row for row in rows}, started)

    async def listen(self, stop: asyncio.Event) -> None:
        """Drop a merchant's cached view as soon as another process changes it (reconnecting when
        the listening connection is lost; the TTL covers the gap)."""
        while not stop.is_set():
            try:
                async with self._db.dedicated() as connection:
                    await connection.add_listener(repo.CHANNEL, self._notified)
                    self._entries.clear()  # whatever changed while not listening
                    while not stop.is_set() and not connection.is_closed():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=5)
            except Exception as error:
                log.warning("routing change notifications unavailable (%s); cached views expire in %.0f s",
                            error, self._ttl)  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1)

    def _notified(self, _connection: Any, _pid: int, _channel: str, merchant_id: str) -> None:
        self.invalidate(merchant_id)

    # -- lifetime ----------------------------------------------------------------------------------

    def _retire(self, configured: Configured) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRE_AFTER_SECONDS)
            await configured.gateway.aclose()

        task = asyncio.create_task(close_later())
        self._retiring[task] = configured
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def forget(self, account_id: str) -> None:
        """A deleted account: its adapter and breaker go."""
        cached = self._adapters.pop(account_id, None)
        if cached is not None:
            self._retire(cached[1])
        self._breakers.forget(account_id)

    async def aclose(self) -> None:
        retiring, self._retiring = dict(self._retiring), {}
        for task in retiring:
            task.cancel()
        adapters, self._adapters = self._adapters, {}
        for configured in [*retiring.values(), *(built for _, built in adapters.values())]:
            with contextlib.suppress(Exception):
                await configured.gateway.aclose()
        await self.platform.aclose()


__all__ = ["AccountDirectory", "KeyUnavailable", "is_account_id"]
