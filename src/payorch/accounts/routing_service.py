"""The rules of ``/v1/routing``: store a new version, read the current one and its history, and
the dry run, which routes exactly as a charge would (``ChargeRouting``) without calling anyone."""

from __future__ import annotations

from typing import Any

from payorch.accounts.charge_routing import ChargeRouting
from payorch.accounts.directory import AccountDirectory
from payorch.accounts.schemas import EvaluateRequest, render_version
from payorch.audit.events import AuditEvent, Resource, outbox_params
from payorch.errors import ApiError, InvalidRequest
from payorch.ids import new_id
from payorch.orchestration.routing import ChargeFacts
from payorch.orchestration.routing_rules import InvalidRouting, RoutingRules, check_rules
from payorch.payments.card_facts import card_facts, vaulted
from payorch.security.api_keys import Caller
from payorch.storage import gateway_accounts as repo
from payorch.storage.database import Database

HISTORY = 20


class RoutingConflict(ApiError):
    status = 409
    type = "invalid_request_error"
    code = "routing_changed_concurrently"


class RoutingService:
    def __init__(self, db: Database, directory: AccountDirectory, routing: ChargeRouting) -> None:
        self._db = db
        self._directory = directory
        self._routing = routing

    async def put(self, caller: Caller, config: RoutingRules) -> dict[str, Any]:
        async with self._db.connection() as connection:
            rows = await repo.list_accounts(connection, caller.merchant_id)
        # A configuration is per mode: it may name that mode's accounts and the platform's.
        known = {row.id for row in rows if row.livemode == caller.livemode} | set(self._directory.platform.names)
        try:
            check_rules(config, known)
        except InvalidRouting as error:
            raise InvalidRequest(str(error), param=error.param, code="routing_invalid") from None
        stored_config = config.model_dump(mode="json", exclude_none=True)
        event = AuditEvent(
            actor=caller.actor(),
            origin=caller.origin(),
            action="routing.updated",
            resource=Resource(type="routing", id=caller.merchant_id),
            details={"rules": [rule.name for rule in config.rules], "config": stored_config},
        )
        try:
            async with self._db.connection() as connection:
                await repo.put_routing(
                    connection,
                    caller.merchant_id,
                    caller.livemode,
                    stored_config,
                    caller.key_id,
                    outbox_params([event]),
                )
        except Exception as error:
            if type(error).__name__ == "UniqueViolationError":
                raise RoutingConflict(
                    "Another routing version was stored at the same time: read it and retry."
                ) from None
            raise
        self._directory.invalidate(caller.merchant_id)
        return await self.get(caller)

    async def get(self, caller: Caller) -> dict[str, Any]:
        async with self._db.connection() as connection:
            rows = await repo.routing_history(connection, caller.merchant_id, caller.livemode, HISTORY + 1)
        return {
            "object": "routing",
            "current": render_version(rows[0]) if rows else None,
            "history": [render_version(row) for row in rows[1:]],
        }

    async def evaluate(self, caller: Caller, params: EvaluateRequest) -> dict[str, Any]:
        """What a charge with these parameters would be routed to now."""
        if isinstance(params.payment_method, str):
            async with self._db.connection() as connection:
                known = card_facts(await vaulted(connection, caller, params.payment_method))
        else:
            known = card_facts(params.payment_method)
        facts = ChargeFacts(
            charge_id=new_id("ch"),
            amount=params.amount,
            currency=params.currency,
            livemode=caller.livemode,
            capture=params.capture,
            tokens=known.tokens,
            metadata=params.metadata,
            card=known.card,
        )
        routed = await self._routing.route(caller.merchant_id, facts)
        return {"object": "routing_evaluation", **routed.decision.record()}
