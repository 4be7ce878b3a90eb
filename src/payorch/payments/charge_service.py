"""Charges as the API sees them: create (on the operation runner), retrieve, list."""

from __future__ import annotations

from typing import Any

from payorch.errors import NotFound
from payorch.payments.charge_create import CreateCharge
from payorch.payments.operations import OperationRunner, Reply
from payorch.payments.schemas import ChargeCreate
from payorch.security.api_keys import Caller
from payorch.storage import charges as repo
from payorch.storage.charges import Charge
from payorch.storage.database import Database


class ChargeService:
    def __init__(self, db: Database, runner: OperationRunner, create: CreateCharge) -> None:
        self._db = db
        self._runner = runner
        self._create = create

    async def create(
        self,
        caller: Caller,
        params: ChargeCreate,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: Any,
        path: str,
    ) -> Reply:
        """Create a charge and run it through its gateways; the reply is what the API answers."""
        request = self._runner.request(
            caller, params, request_id=request_id, idempotency_key=idempotency_key, raw_body=raw_body, path=path
        )
        return await self._runner.run(self._create, request)

    async def get(self, caller: Caller, charge_id: str) -> Charge:
        async with self._db.connection() as connection:
            charge = await repo.get_charge(connection, caller.merchant_id, charge_id, livemode=caller.livemode)
        if charge is None:
            raise NotFound(f"No such charge: '{charge_id}'", param="id")
        return charge

    async def list_page(
        self, caller: Caller, *, limit: int, starting_after: str | None, ending_before: str | None
    ) -> tuple[list[Charge], bool]:
        async with self._db.connection() as connection:
            return await repo.list_charges(
                connection,
                caller.merchant_id,
                livemode=caller.livemode,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
            )
