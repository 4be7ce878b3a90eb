"""Payment methods: single-use frontend tokens (Stripe Elements ``tok_``/``pm_``, Braintree nonces,
Adyen encrypted card data, sandbox test tokens) exchanged at each gateway for reusable ones, behind
one ``pm_`` id. A charge with that id is eligible on every gateway that vaulted it.

Each token is vaulted at its own gateway, concurrently, each call raced against that gateway's timeout,
with ``<pm id>_<gateway>`` as the gateway's idempotency key (the ``pm_`` id is chosen, and bound to the
request's ``Idempotency-Key``, before any gateway is called, so a retry after a crash replays the same
vault calls rather than spending the single-use token twice).

Partial failures: the payment method keeps the gateways that vaulted its token; ``gateways`` in the
answer lists them, and the audit event names the ones that did not and why. If none did: 400
``token_rejected`` when every gateway refused its token, else 503 ``gateway_unavailable``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from payorch.audit.events import AuditEvent, Resource, record
from payorch.errors import ApiError, InvalidRequest, NoGatewayAvailable, NotFound
from payorch.gateways.base import CardSummary, Outcome, VaultResult
from payorch.gateways.registry import GatewayRegistry
from payorch.ids import new_id
from payorch.payments import idempotency, replay
from payorch.payments.gateway_calls import bounded
from payorch.payments.schemas import CardOut, GatewayName, StrictModel, Token
from payorch.payments.service import Reply
from payorch.security.api_keys import Caller
from payorch.settings import IdempotencyConfig
from payorch.storage import payment_methods as repo
from payorch.storage.engine import SessionFactory, unit_of_work
from payorch.storage.payment_methods import PaymentMethod

VAULT_UNKNOWN = VaultResult(Outcome.UNKNOWN, code="timeout", message="No answer from the gateway before the timeout.")


class PaymentMethodCreate(StrictModel):
    tokens: dict[GatewayName, Token] = Field(
        min_length=1,
        max_length=8,
        description='Single-use tokens or nonces from each gateway\'s own frontend SDK: `{"<gateway>": "<token>"}`.',
    )


class PaymentMethodOut(BaseModel):
    id: str
    object: Literal["payment_method"] = "payment_method"
    livemode: bool
    gateways: list[str] = Field(description="The gateways holding a reusable token for it, in routing order.")
    card: CardOut | None
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
    """Why nothing was vaulted."""
    if any(r.outcome in (Outcome.UNKNOWN, Outcome.NOT_SENT) for r in results.values()):
        return NoGatewayAvailable("No gateway could vault the payment method; retry later.")
    first = sorted(results)[0]
    refused = ", ".join(f"{name} ({results[name].code or 'refused'})" for name in sorted(results))
    return InvalidRequest(
        f"Every gateway refused its token: {refused}.", param=f"tokens.{first}", code="token_rejected"
    )


class PaymentMethodService:
    def __init__(
        self, sessions: SessionFactory, registry: GatewayRegistry, idempotency_config: IdempotencyConfig
    ) -> None:
        self._sessions = sessions
        self._registry = registry
        self._idem = idempotency_config

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
        unknown = sorted(name for name in params.tokens if name not in self._registry)
        if unknown:
            raise InvalidRequest(
                f"No gateway named '{unknown[0]}' is configured.",
                param=f"tokens.{unknown[0]}",
                code="gateway_not_configured",
            )
        payment_method_id = new_id("pm")
        if idempotency_key is not None:
            print_ = idempotency.fingerprint("POST", path, raw_body, caller.livemode)
            async with unit_of_work(self._sessions) as session:
                taken = await replay.take_key(
                    session,
                    caller.merchant_id,
                    idempotency_key,
                    print_,
                    path,
                    stale_after_seconds=self._idem.stale_after_seconds,
                )
                if isinstance(taken, Reply):
                    return taken
                if isinstance(taken, replay.Resume):
                    payment_method_id = taken.object_id
                else:
                    await replay.attach(session, caller.merchant_id, idempotency_key, payment_method_id)
        results = await self._vault_all(payment_method_id, params.tokens)
        vaulted = {name: r for name, r in results.items() if r.outcome is Outcome.APPROVED and r.token}
        async with unit_of_work(self._sessions) as session:
            if vaulted:
                payment_method = await self._store(session, caller, payment_method_id, vaulted)
                reply = Reply(201, replay.dumps(render_payment_method(payment_method, self._registry.names)))
            else:
                reply = Reply(*self._error_reply(_refusal(results), request_id))
            await self._audit(session, caller, payment_method_id, results, vaulted)
            if idempotency_key is not None:
                await replay.complete(session, caller.merchant_id, idempotency_key, reply, payment_method_id)
        return reply

    @staticmethod
    def _error_reply(error: ApiError, request_id: str) -> tuple[int, bytes]:
        return error.status, replay.dumps(error.body(request_id))

    async def _vault_all(self, payment_method_id: str, tokens: dict[str, str]) -> dict[str, VaultResult]:
        holders = [configured for configured in self._registry if configured.name in tokens]
        names = [configured.name for configured in holders]
        calls = [
            bounded(
                configured.gateway.vault(tokens[configured.name], f"{payment_method_id}_{configured.name}"),
                configured.timeout,
                VAULT_UNKNOWN,
            )
            for configured in holders
        ]
        return dict(zip(names, await asyncio.gather(*calls), strict=True))

    async def _store(
        self, session: AsyncSession, caller: Caller, payment_method_id: str, vaulted: dict[str, VaultResult]
    ) -> PaymentMethod:
        existing = await repo.get_payment_method(
            session, caller.merchant_id, payment_method_id, livemode=caller.livemode
        )
        if existing is not None:  # a resumed request whose first run had stored it
            return existing
        ordered = [name for name in self._registry.names if name in vaulted]
        card = next((vaulted[n].card for n in ordered if vaulted[n].card is not None), None) or CardSummary()
        return await repo.insert_payment_method(
            session,
            id=payment_method_id,
            merchant_id=caller.merchant_id,
            livemode=caller.livemode,
            tokens={name: str(vaulted[name].token) for name in ordered},
            card_brand=card.brand,
            card_last4=card.last4,
            card_exp_month=card.exp_month,
            card_exp_year=card.exp_year,
        )

    @staticmethod
    async def _audit(
        session: AsyncSession,
        caller: Caller,
        payment_method_id: str,
        results: dict[str, VaultResult],
        vaulted: dict[str, VaultResult],
    ) -> None:
        not_vaulted = {name: r.code or r.outcome.value for name, r in results.items() if name not in vaulted}
        await record(
            session,
            AuditEvent(
                actor=caller.actor(),
                origin=caller.origin(),
                action="payment_method.vaulted",
                resource=Resource(type="payment_method", id=payment_method_id),
                outcome="success" if vaulted else "failure",
                details={"gateways": sorted(vaulted), "not_vaulted": not_vaulted},
            ),
        )

    async def get(self, caller: Caller, payment_method_id: str) -> dict[str, Any]:
        """The rendered payment method; another merchant's or another mode's id is not found."""
        async with unit_of_work(self._sessions) as session:
            payment_method = await repo.get_payment_method(
                session, caller.merchant_id, payment_method_id, livemode=caller.livemode
            )
        if payment_method is None:
            raise NotFound(f"No such payment_method: '{payment_method_id}'", param="id")
        return render_payment_method(payment_method, self._registry.names)
