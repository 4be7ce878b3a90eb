"""Routing one charge over the merchant's cached view: the rule's order, then each candidate's
adapter and token. ``POST /v1/routing/evaluate`` runs exactly this, so its answer is the charge's."""

from __future__ import annotations

from payorch.accounts.crypto import KeyUnavailable
from payorch.accounts.directory import AccountDirectory
from payorch.errors import InvalidRequest
from payorch.orchestration.breaker import CircuitBreakers
from payorch.orchestration.routing import Candidate, ChargeFacts, Routed, Router


class ChargeRouting:
    """Implements ``orchestration.routing.ChargeRouter``."""

    def __init__(self, directory: AccountDirectory, router: Router, breakers: CircuitBreakers) -> None:
        self._directory = directory
        self._router = router
        self._breakers = breakers

    async def route(self, merchant_id: str, facts: ChargeFacts) -> Routed:
        view = await self._directory.view(merchant_id, facts.livemode)
        unknown = Router.unknown_names(view, facts.tokens)
        if unknown:
            raise InvalidRequest(
                f"No gateway account named '{unknown[0]}' is configured.",
                param=f"payment_method.tokens.{unknown[0]}",
                code="gateway_not_configured",
            )
        decision = await self._router.decide(view, facts, self._breakers.is_open)
        candidates = []
        for key in list(decision.candidates):
            account = view.by_key(key)
            if account is None:  # pragma: no cover - the router only names the view's accounts
                continue
            try:
                configured = await self._directory.resolve(merchant_id, key)
            except KeyUnavailable:
                decision.skip(key, "credentials_unavailable")
                continue
            if configured is None:
                decision.skip(key, "unknown_account")
                continue
            candidates.append(Candidate(configured, facts.tokens[account.name]))
        return Routed(decision, candidates)
