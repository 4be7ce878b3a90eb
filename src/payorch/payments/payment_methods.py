"""Payment methods: single-use frontend tokens (Stripe Elements ``tok_``/``pm_``, Braintree nonces,
Adyen encrypted card data, sandbox test tokens) exchanged at each gateway for reusable ones, behind
one ``pm_`` id. A charge with that id is eligible on every gateway that vaulted it.

Each token is vaulted at its own gateway, concurrently, each call raced against that gateway's timeout,
with ``<pm id>_<gateway>`` as the gateway's idempotency key (the ``pm_`` id is chosen, and bound to the
request's ``Idempotency-Key``, before any gateway is called, so a retry after a crash replays the same
vault calls rather than spending the single-use token twice).

Partial failures: the payment method keeps the gateways that vaulted its token; ``gateways`` in the
answer lists them, and the audit event names the ones that did not and why. If none did: 400
``token_rejected`` when every gateway refused its token (declined it, or refused it as unknown,
used or not its own), else 503 ``gateway_unavailable``; either names each gateway's reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from payorch.audit.events import AuditEvent, Resource, record_many
from payorch.errors import ApiError, InvalidRequest, NoGatewayAvailable, NotFound
from payorch.gateways.base import CardSummary, Outcome, VaultResult
from payorch.gateways.registry import Configured
from payorch.ids import new_id
from payorch.orchestration.executor import call_once
from payorch.orchestration.routing import VaultAccounts
from payorch.payments import refusals
from payorch.payments.operations import OperationRequest, OperationRunner, Reply, error_reply, reply, store_reply
from payorch.payments.schemas import CardOut, GatewayName, StrictModel, Token
from payorch.security.api_keys import Caller
from payorch.storage import idempotency as keys
from payorch.storage import payment_methods as repo
from payorch.storage.database import Database
from payorch.storage.idempotency import KeyExists
from payorch.storage.payment_methods import PaymentMethod
from payorch.storage.sql import Connection

VAULT_UNKNOWN = VaultResult(Outcome.UNKNOWN, code="timeout", message="No answer from the gateway before the timeout.")


class PaymentMethodCreate(StrictModel):
    tokens: dict[GatewayName, Token] = Field(
        min_length=1,
        max_length=8,
        description='Single-use tokens or nonces from each gateway\'s own frontend SDK: `{"<gateway>": "<token>"}`.',
    )


class PaymentMethodCardOut(CardOut):
    bin: str | None = Field(description="The first 6 or 8 digits, where a gateway told them when vaulting.")
    country: str | None = Field(description="The issuing country (ISO 3166-1 alpha-2), where a gateway told it.")


class PaymentMethodOut(BaseModel):
    id: str
    object: Literal["payment_method"] = "payment_method"
    livemode: bool
    gateways: list[str] = Field(description="The gateways holding a reusable token for it, in routing order.")
    card: PaymentMethodCardOut | None
    created: int


def render_payment_method(payment_method: PaymentMethod, gateway_order: list[str]) -> dict[str, Any]:
    """The public shape: never a gateway token, only which gateways hold one, and the card summary."""
    card = None
    if payment_method.card_last4 is not None or payment_method.card_brand is not None:
        card = {
            "brand": payment_method.card_brand,
            "last4": payment_method.card_last4,
            "exp_month": payment_method.card_exp_month,
            "exp_year": payment_method.card_exp_year,
            "bin": payment_method.card_bin,
            "country": payment_method.card_country,
        }
    position = {name: index for index, name in enumerate(gateway_order)}
    return {
        "id": payment_method.id,
        "object": "payment_method",
        "livemode": payment_method.livemode,
        "gateways": sorted(payment_method.tokens, key=lambda name: (position.get(name, len(position)), name)),
        "card": card,
        "created": int(payment_method.created_at.timestamp()),
    }


def _refusal(results: dict[str, VaultResult]) -> ApiError:
    """Why nothing was vaulted, in each gateway's words (redacted, bounded): 400 ``token_rejected``
    when every gateway refused its token; 503 when one could not be reached or did not answer, as a
    retry may vault there (the answer names the refused tokens too, which a retry will not change)."""
    names = sorted(results)
    reasons = refusals.joined(
        refusals.reason(name, r.outcome, r.code, r.message, refused=r.refused) for name, r in sorted(results.items())
    )
    if not all(result.refused for result in results.values()):
        return NoGatewayAvailable(f"No gateway could vault the payment method; retry later: {reasons}.")
    return InvalidRequest(
        f"Every gateway refused its token: {reasons}.", param=f"tokens.{names[0]}", code="token_rejected"
    )


@dataclass(frozen=True, slots=True)
class OpenedVault:
    payment_method_id: str
    tokens: dict[str, str]
    holders: dict[str, Configured]
    """The accounts to vault at, by name, in routing order (a merchant's own replace the platform's)."""


class VaultPaymentMethod:
    """``POST /v1/payment_methods`` on the operation runner."""

    def __init__(self, db: Database, accounts: VaultAccounts) -> None:
        self._db = db
        self._accounts = accounts

    async def _holders(self, request: OperationRequest[PaymentMethodCreate]) -> dict[str, Configured]:
        caller = request.caller
        names = await self._accounts.names(caller.merchant_id, caller.livemode)
        unknown = sorted(name for name in request.params.tokens if name not in names)
        if unknown:
            raise InvalidRequest(
                f"No gateway named '{unknown[0]}' is configured.",
                param=f"tokens.{unknown[0]}",
                code="gateway_not_configured",
            )
        return await self._accounts.by_names(caller.merchant_id, caller.livemode, list(request.params.tokens))

    async def open(self, request: OperationRequest[PaymentMethodCreate]) -> OpenedVault | KeyExists:
        holders = await self._holders(request)
        # The id is chosen, and bound to the key, before any gateway is called: a retry after a crash
        # replays the same vault calls instead of spending the single-use tokens twice.
        payment_method_id = new_id("pm")
        if request.key is not None:
            async with self._db.connection() as connection:
                taken = await keys.take(connection, request.key, payment_method_id)
            if taken is not None:
                return taken
        return OpenedVault(payment_method_id, request.params.tokens, holders)

    async def resume(
        self, connection: Connection, request: OperationRequest[PaymentMethodCreate], object_id: str | None
    ) -> OpenedVault:
        if object_id is None:
            object_id = new_id("pm")
            if request.key is not None:
                await keys.relock(connection, request.key.merchant_id, request.key.key, object_id)
        return OpenedVault(object_id, request.params.tokens, await self._holders(request))

    async def execute(self, opened: OpenedVault) -> dict[str, VaultResult]:
        """Each token at its own gateway, concurrently, with ``<pm id>_<gateway>`` as the key."""
        calls = [
            call_once(
                configured.gateway.vault(opened.tokens[name], f"{opened.payment_method_id}_{name}"),
                configured.timeout,
                VAULT_UNKNOWN,
            )
            for name, configured in opened.holders.items()
        ]
        results = dict(zip(opened.holders, await asyncio.gather(*calls), strict=True))
        for name in opened.tokens:
            # An account of the other mode, disabled, or whose credentials cannot be opened now.
            results.setdefault(name, VaultResult(Outcome.NOT_SENT, code="account_unavailable"))
        return results

    async def close(
        self, request: OperationRequest[PaymentMethodCreate], opened: OpenedVault, results: dict[str, VaultResult]
    ) -> Reply:
        caller = request.caller
        vaulted = {name: r for name, r in results.items() if r.outcome is Outcome.APPROVED and r.token}
        event = _event(caller, opened.payment_method_id, results, vaulted)
        async with self._db.transaction() as tx:
            if vaulted:
                stored = await repo.insert_or_get(
                    tx, self._payment_method(caller, opened.payment_method_id, vaulted, list(opened.holders))
                )
                answer = reply(201, render_payment_method(stored, list(opened.holders)))
            else:
                answer = error_reply(_refusal(results), request.request_id)
            await record_many(tx, [event])
            await store_reply(tx, request, answer, opened.payment_method_id)
        return answer

    @staticmethod
    def _payment_method(
        caller: Caller, payment_method_id: str, vaulted: dict[str, VaultResult], order: list[str]
    ) -> PaymentMethod:
        ordered = [name for name in order if name in vaulted]
        cards = [card for card in (vaulted[n].card for n in ordered) if card is not None]
        card = cards[0] if cards else CardSummary()
        # One card, seen by several gateways: each fact from the first that told it.
        first_bin = next((c.bin for c in cards if c.bin is not None), None)
        country = next((c.country for c in cards if c.country is not None), None)
        return PaymentMethod(
            id=payment_method_id,
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            tokens={name: str(vaulted[name].token) for name in ordered},
            card_brand=card.brand,
            card_last4=card.last4,
            card_exp_month=card.exp_month,
            card_exp_year=card.exp_year,
            created_at=datetime.now(UTC),
            card_bin=first_bin,
            card_country=country,
        )


def _event(
    caller: Caller, payment_method_id: str, results: dict[str, VaultResult], vaulted: dict[str, VaultResult]
) -> AuditEvent:
    not_vaulted = {name: r.code or r.outcome.value for name, r in results.items() if name not in vaulted}
    return AuditEvent(
        actor=caller.actor(),
        origin=caller.origin(),
        action="payment_method.vaulted",
        resource=Resource(type="payment_method", id=payment_method_id),
        outcome="success" if vaulted else "failure",
        details={"gateways": sorted(vaulted), "not_vaulted": not_vaulted},
    )


class PaymentMethodService:
    def __init__(self, db: Database, runner: OperationRunner, accounts: VaultAccounts) -> None:
        self._db = db
        self._runner = runner
        self._accounts = accounts

    async def create(
        self,
        caller: Caller,
        params: PaymentMethodCreate,
        *,
        request_id: str,
        idempotency_key: str | None,
        raw_body: Any,
        path: str,
    ) -> Reply:
        """Vault each token at its gateway and store the reusable ones under one ``pm_`` id."""
        request = self._runner.request(
            caller, params, request_id=request_id, idempotency_key=idempotency_key, raw_body=raw_body, path=path
        )
        return await self._runner.run(VaultPaymentMethod(self._db, self._accounts), request)

    async def get(self, caller: Caller, payment_method_id: str) -> dict[str, Any]:
        """The rendered payment method; another merchant's or another mode's id is not found."""
        async with self._db.connection() as connection:
            payment_method = await repo.get_payment_method(
                connection, caller.merchant_id, payment_method_id, livemode=caller.livemode
            )
        if payment_method is None:
            raise NotFound(f"No such payment_method: '{payment_method_id}'", param="id")
        return render_payment_method(payment_method, await self._accounts.names(caller.merchant_id, caller.livemode))
