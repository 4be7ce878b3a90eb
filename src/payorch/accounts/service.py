"""The rules of ``/v1/gateway_accounts``: create (validate, optionally verify, seal), read, update,
delete (refused while the account holds money), and the master-key rotation."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from payorch.accounts import credentials as creds
from payorch.accounts.config import AccountsConfig
from payorch.accounts.crypto import KeyUnavailable, KeyWrapper, SealingRefused, seal, unseal
from payorch.accounts.directory import AccountDirectory, context_of, is_account_id, sealed_of
from payorch.accounts.schemas import AccountCreate, AccountUpdate, render_account
from payorch.audit.events import Actor, AuditEvent, Origin, Resource, outbox_params
from payorch.errors import ApiError, InvalidRequest, NoGatewayAvailable, NotFound
from payorch.gateways.plugin import GatewayServices
from payorch.ids import new_id
from payorch.security.api_keys import Caller
from payorch.storage import gateway_accounts as repo
from payorch.storage.database import Database
from payorch.storage.gateway_accounts import AccountRow

log = logging.getLogger(__name__)


class AccountNotFound(NotFound):
    code = "resource_missing"


class AccountNameTaken(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "account_name_taken"


class AccountInUse(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "account_in_use"


class SealingNotConfigured(ApiError):
    """Production without a key service to seal credentials with: the operator's to fix."""

    status = 503
    type = "api_error"
    code = "kms_not_configured"


class AccountChanged(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "account_changed_concurrently"


def _event(caller: Caller | None, action: str, row: AccountRow, **details: Any) -> AuditEvent:
    actor = caller.actor() if caller is not None else Actor(merchant_id=row.merchant_id, user="system:key_rotation")
    return AuditEvent(
        actor=actor,
        origin=caller.origin() if caller is not None else Origin(),
        action=action,
        resource=Resource(type="gateway_account", id=row.id),
        details={"name": row.name, "gateway": row.kind, "fingerprint": row.fingerprint, **details},
    )


class AccountService:
    def __init__(
        self,
        db: Database,
        directory: AccountDirectory,
        wrapper: KeyWrapper,
        services: GatewayServices,
        config: AccountsConfig,
    ) -> None:
        self._db = db
        self._directory = directory
        self._wrapper = wrapper
        self._services = services
        self._config = config

    async def create(self, caller: Caller, params: AccountCreate) -> dict[str, Any]:
        config = creds.validate(params.gateway, params.credentials, params.timeout_ms, self._config.allowed_base_urls)
        account_id = new_id("ga")
        now = datetime.now(UTC)
        row = await self._sealed(
            AccountRow(
                id=account_id, merchant_id=caller.merchant_id, livemode=caller.livemode, name=params.name,
                kind=params.gateway, enabled=params.enabled, timeout_ms=params.timeout_ms,
                fees={c: fee.model_dump() for c, fee in params.fees.items()}, sealed_credentials=b"",
                wrapped_key=b"", wrap_key_id="", fingerprint="", secret_last4="", revision=1, created_at=now,
                updated_at=now,
            ),
            config,
        )  # fmt: skip
        if params.verify:  # after sealing: a payorch that cannot keep the credentials does not call the gateway
            await creds.verify(config, self._services)
        event = _event(caller, "gateway_account.created", row, enabled=row.enabled, verified=params.verify)
        async with self._db.connection() as connection:
            stored = await repo.insert_account(connection, row, outbox_params([event], conditional=True))
        if stored is None:
            raise AccountNameTaken(f"You already have an account named '{params.name}'.", param="name")
        self._directory.invalidate(caller.merchant_id)
        return render_account(stored)

    async def list(self, caller: Caller) -> dict[str, Any]:
        async with self._db.connection() as connection:
            rows = await repo.list_accounts(connection, caller.merchant_id)
        mine = [row for row in rows if row.livemode == caller.livemode]
        names = {row.name for row in rows}
        return {
            "object": "list",
            "data": [render_account(row) for row in mine],
            "platform": [name for name in self._directory.platform.names if name not in names],
        }

    async def get(self, caller: Caller, account_id: str) -> dict[str, Any]:
        return render_account(await self._row(caller, account_id))

    async def update(self, caller: Caller, account_id: str, params: AccountUpdate) -> dict[str, Any]:
        row = await self._row(caller, account_id)
        changed = sorted(params.model_fields_set - {"verify"})
        updated = replace(
            row,
            name=params.name if params.name is not None else row.name,
            enabled=params.enabled if params.enabled is not None else row.enabled,
            timeout_ms=params.timeout_ms if "timeout_ms" in params.model_fields_set else row.timeout_ms,
            fees=row.fees if params.fees is None else {c: fee.model_dump() for c, fee in params.fees.items()},
        )
        if params.credentials is not None or params.verify or "timeout_ms" in params.model_fields_set:
            given = params.credentials if params.credentials is not None else await self._credentials(row)
            config = creds.validate(row.kind, given, updated.timeout_ms, self._config.allowed_base_urls)
            if params.credentials is not None:
                updated = await self._sealed(updated, config)
            if params.verify:
                await creds.verify(config, self._services)
        event = _event(caller, "gateway_account.updated", updated, changed=changed, enabled=updated.enabled)
        try:
            async with self._db.connection() as connection:
                stored = await repo.update_account(connection, updated, outbox_params([event], conditional=True))
        except Exception as error:
            if type(error).__name__ == "UniqueViolationError":
                raise AccountNameTaken(f"You already have an account named '{updated.name}'.", param="name") from None
            raise
        if stored is None:
            raise AccountChanged("The account changed while this update ran: read it and try again.")
        self._directory.invalidate(caller.merchant_id)
        return render_account(stored)

    async def delete(self, caller: Caller, account_id: str) -> dict[str, Any]:
        row = await self._row(caller, account_id)
        event = _event(caller, "gateway_account.deleted", row)
        async with self._db.connection() as connection:
            deleted, busy = await repo.delete_account(
                connection, caller.merchant_id, row.id, outbox_params([event], conditional=True)
            )
        if busy:
            raise AccountInUse(
                "The account holds charges that can still be captured, voided or refunded, or whose outcome "
                "is still being resolved: disable it instead, and delete it once they are settled."
            )
        if not deleted:
            raise AccountNotFound(f"No such gateway account: '{account_id}'.", param="id")
        self._directory.invalidate(caller.merchant_id)
        self._directory.forget(row.id)
        return {"id": row.id, "object": "gateway_account", "deleted": True}

    async def rotate(self, *, batch: int = 100) -> int:
        """Re-wrap every data key not wrapped by the current master key; the credentials stay sealed
        as they are. Rows are read and written one by one, so charges go on throughout. A row whose
        old key cannot be used (a key this process cannot read) is logged and left as it is."""
        current = await self._wrapper.current_key_id()
        rewrapped, after = 0, ""
        while True:
            async with self._db.connection() as connection:
                rows = await repo.wrapped_by_other(connection, current, after, batch)
            if not rows:
                return rewrapped
            after = rows[-1].id
            for row in rows:
                try:
                    key_id, wrapped = await self._wrapper.rewrap(row.wrap_key_id, row.wrapped_key, context_of(row))
                except KeyUnavailable as error:
                    log.error("account %s: not re-wrapped (%s)", row.id, error)
                    continue
                event = _event(None, "gateway_account.key_rewrapped", row, from_key=row.wrap_key_id, to_key=key_id)
                async with self._db.connection() as connection:
                    done = await repo.rewrap_account(
                        connection, row, old_key_id=row.wrap_key_id, wrap_key_id=key_id, wrapped_key=wrapped,
                        audit=outbox_params([event], conditional=True),
                    )  # fmt: skip
                rewrapped += done

    async def _row(self, caller: Caller, account_id: str) -> AccountRow:
        row = None
        if is_account_id(account_id):
            async with self._db.connection() as connection:
                row = await repo.get_account(connection, caller.merchant_id, account_id)
        if row is None or row.livemode != caller.livemode:  # unknown, or another merchant's or mode's
            raise AccountNotFound(f"No such gateway account: '{account_id}'.", param="id")
        return row

    async def _sealed(self, row: AccountRow, config: Any) -> AccountRow:
        fingerprint, last4 = creds.summary(config)
        try:
            sealed = await seal(self._wrapper, creds.sealable(config), context_of(row))
        except SealingRefused as error:
            raise SealingNotConfigured(
                f"Gateway accounts cannot be connected or given new credentials on this payorch: {error}. "
                "Nothing was stored."
            ) from None
        except KeyUnavailable as error:
            log.error("account %s: cannot seal credentials (%s)", row.id, error)
            raise NoGatewayAvailable("The credentials could not be sealed now (key service unavailable).") from None
        return replace(
            row,
            sealed_credentials=sealed.ciphertext,
            wrapped_key=sealed.wrapped_key,
            wrap_key_id=sealed.wrap_key_id,
            fingerprint=fingerprint,
            secret_last4=last4,
        )

    async def _credentials(self, row: AccountRow) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = orjson.loads(await unseal(self._wrapper, sealed_of(row), context_of(row)))
        except KeyUnavailable as error:
            log.error("account %s: cannot open credentials (%s)", row.id, error)
            raise NoGatewayAvailable("The credentials could not be opened now (key service unavailable).") from None
        return opened


__all__ = ["AccountService", "InvalidRequest"]
