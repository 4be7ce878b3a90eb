"""Which accounts may take a charge, in which order, and why (DESIGN.md section 5, docs/routing.md).

The router reads a merchant's :class:`RoutingView` (its accounts, the platform's, its rules: built
once per process by the accounts directory and cached) and a charge's :class:`ChargeFacts`, and
answers a :class:`Decision`: the matched rule, the strategy, the ordered candidates and why every
other account was left out. It only orders: what happens after each attempt is the executor's.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from payorch.gateways.base import Capabilities
from payorch.gateways.registry import Configured
from payorch.orchestration.routing_rules import Action, Conditions, RoutingRules, Rule

DRAW_RANGE = 10_000


@dataclass(frozen=True, slots=True)
class Candidate:
    configured: Configured
    token: str

    @property
    def name(self) -> str:
        """The account's key: a platform account's name or a merchant account's id (``ga_...``):
        what attempts, breakers and follow-up calls name it by."""
        return self.configured.name


@dataclass(frozen=True, slots=True)
class Fee:
    percent_bps: int = 0
    """Hundredths of a percent of the amount (290 = 2.90%)."""
    fixed: int = 0
    """Minor units of the charge's currency."""

    def cost(self, amount: int) -> int:
        """What the account charges for ``amount``, rounded up to the minor unit (integers only)."""
        return -(-amount * self.percent_bps // 10_000) + self.fixed


@dataclass(frozen=True, slots=True)
class Account:
    """One account a merchant's charges may be routed to, as routing sees it."""

    key: str
    """Platform accounts: their name. A merchant's own: their id."""
    name: str
    """What ``payment_method.tokens`` are keyed by."""
    kind: str
    capabilities: Capabilities
    enabled: bool = True
    livemode: bool | None = None
    """Which mode's charges it takes; None: both (a platform account)."""
    fees: Mapping[str, Fee] = field(default_factory=dict)
    platform: bool = False


@dataclass(frozen=True, slots=True)
class RoutingView:
    """A merchant's accounts (its own in creation order, then the platform's it has not replaced,
    in the platform's order) and its current rules."""

    accounts: tuple[Account, ...]
    rules: RoutingRules | None = None
    version: int | None = None
    platform_order_by_currency: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def by_key(self, key: str) -> Account | None:
        return next((account for account in self.accounts if account.key == key), None)

    def by_name(self, name: str) -> Account | None:
        return next((account for account in self.accounts if account.name == name), None)


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What is known of the card before any gateway is called (docs/routing.md)."""

    network: str | None = None
    bin: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True)
class ChargeFacts:
    charge_id: str
    amount: int
    currency: str
    livemode: bool
    capture: bool
    tokens: Mapping[str, str]
    """By account name."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    card: CardFacts = field(default_factory=CardFacts)


class VaultAccounts(Protocol):
    """The accounts a merchant's payment method tokens may be vaulted at, by name."""

    async def names(self, merchant_id: str, livemode: bool) -> list[str]:
        """Every account name the merchant's tokens may use in this mode, in routing order."""
        ...

    async def by_names(self, merchant_id: str, livemode: bool, names: list[str]) -> dict[str, Configured]:
        """The adapters of those of ``names`` that take this mode's payment methods now."""
        ...


class SuccessRates(Protocol):
    """Each account's recent authorizations and failures for a currency and card network."""

    async def counts(self, keys: Sequence[str], currency: str, network: str) -> dict[str, tuple[int, int]] | None:
        """``{key: (approved, failed)}``; None when the statistics cannot be read now."""
        ...


@dataclass(slots=True)
class Decision:
    """How a charge was routed: recorded with it, shown as ``routing``, carried in the audit trail."""

    version: int | None
    rule: str | None
    """The matched rule's name; None: the default (or the static order)."""
    strategy: str
    candidates: list[str]
    """Account keys, in the order the executor goes through them."""
    breaker_open: list[str] = field(default_factory=list)
    """Candidates whose breaker was open: left in place, where the executor turns them away without
    a call (an attempt recorded as not sent, ``breaker_open``), as the failover rules always did; the
    record lists them as skipped, since none is called."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Every other account the merchant has, and why it was left out."""
    details: dict[str, Any] = field(default_factory=dict)
    """What the strategy weighed: the draw, the costs, the success-rate scores."""

    def skip(self, key: str, reason: str) -> None:
        if key in self.candidates:
            self.candidates.remove(key)
        self.skipped[key] = reason

    def record(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rule": self.rule,
            "strategy": self.strategy,
            "candidates": [key for key in self.candidates if key not in self.breaker_open],
            "skipped": {**self.skipped, **dict.fromkeys(self.breaker_open, "breaker_open")},
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True, slots=True)
class Routed:
    """A decision and the candidates it names, each with its adapter and token."""

    decision: Decision
    candidates: list[Candidate]


class ChargeRouter(Protocol):
    """Routes one merchant's charge (the accounts package implements it over its cached view)."""

    async def route(self, merchant_id: str, facts: ChargeFacts) -> Routed:
        """Raise ``InvalidRequest`` for a token naming no account of the merchant or the platform."""
        ...


class GatewayResolver(Protocol):
    """The adapter of an account a stored charge, attempt or refund names (its key)."""

    async def gateway(self, merchant_id: str, key: str) -> Configured | None: ...


def conditions_hold(conditions: Conditions, facts: ChargeFacts) -> bool:
    """Whether every present condition holds for the charge; an unknown card fact never matches."""
    if conditions.currency is not None and facts.currency not in conditions.currency:
        return False
    amount = conditions.amount
    if amount is not None and (
        (amount.gte is not None and facts.amount < amount.gte) or (amount.lt is not None and facts.amount >= amount.lt)
    ):
        return False
    if conditions.livemode is not None and facts.livemode != conditions.livemode:
        return False
    if conditions.metadata is not None and any(facts.metadata.get(k) != v for k, v in conditions.metadata.items()):
        return False
    card = facts.card
    if conditions.card_network is not None and (card.network is None or card.network not in conditions.card_network):
        return False
    if conditions.bin_prefix is not None and (
        card.bin is None or not any(card.bin.startswith(prefix) for prefix in conditions.bin_prefix)
    ):
        return False
    return conditions.issuing_country is None or (
        card.country is not None and card.country in conditions.issuing_country
    )


def required_capabilities(facts: ChargeFacts) -> tuple[str, ...]:
    """What an account must be able to do to take the charge: an authorization left uncaptured
    (``capture=false``) must be releasable."""
    return ("authorize",) if facts.capture else ("authorize", "void")


class Router:
    def __init__(self, success_rates: SuccessRates | None = None, *, exploration: float = 0.05) -> None:
        self._rates = success_rates
        self._exploration = exploration

    @staticmethod
    def unknown_names(view: RoutingView, tokens: Mapping[str, str]) -> list[str]:
        names = {account.name for account in view.accounts}
        return sorted(name for name in tokens if name not in names)

    async def decide(self, view: RoutingView, facts: ChargeFacts, breaker_open: Callable[[str], bool]) -> Decision:
        rule, action = _match(view.rules, facts)
        listed = action.listed() if action is not None else _static_order(view, facts.currency)
        decision = Decision(view.version, rule.name if rule else None, action.strategy if action else "priority", [])
        eligible = []
        for key in listed:
            reason = _why_not(view.by_key(key), facts)
            if reason is not None:
                decision.skipped[key] = reason
            else:
                eligible.append(key)
        for account in view.accounts:
            if account.key not in listed:
                decision.skipped[account.key] = "not_in_rule" if action is not None else "not_in_order"
        decision.candidates = await self._order(decision, action, eligible, view, facts)
        decision.breaker_open = [key for key in decision.candidates if breaker_open(key)]
        return decision

    async def _order(
        self, decision: Decision, action: Action | None, eligible: list[str], view: RoutingView, facts: ChargeFacts
    ) -> list[str]:
        if action is not None and action.strategy == "success_rate":
            # What the charge's outcomes are counted under, even when there is nothing to order.
            decision.details["network"] = facts.card.network or "unknown"
        if action is None or action.strategy == "priority" or len(eligible) < 2:
            return eligible
        if action.strategy == "volume_split":
            return _split(decision, action, eligible, facts)
        if action.strategy == "least_cost":
            return _cheapest(decision, eligible, view, facts)
        return await self._best_rate(decision, eligible, facts)

    async def _best_rate(self, decision: Decision, eligible: list[str], facts: ChargeFacts) -> list[str]:
        network = str(decision.details["network"])
        counts = None
        if self._rates is not None:
            counts = await self._rates.counts(eligible, facts.currency, network)
        if counts is None:
            decision.details["fallback"] = "statistics_unavailable"
            return eligible
        # Thompson sampling, seeded by the charge: each account's rate drawn from Beta(1 + approved,
        # 1 + failed); with the exploration floor's chance a random account goes first.
        rng = random.Random(_digest(f"{facts.charge_id}:success_rate"))  # noqa: S311 - not for secrets
        sampled = {key: rng.betavariate(1 + counts[key][0], 1 + counts[key][1]) for key in eligible}
        ordered = sorted(eligible, key=lambda key: -sampled[key])
        if rng.random() < self._exploration:
            explored = ordered.pop(rng.randrange(len(ordered)))
            ordered.insert(0, explored)
            decision.details["explored"] = explored
        decision.details["observed"] = {key: {"approved": counts[key][0], "failed": counts[key][1]} for key in eligible}
        return ordered


def _match(rules: RoutingRules | None, facts: ChargeFacts) -> tuple[Rule | None, Action | None]:
    if rules is None:
        return None, None
    for rule in rules.rules:
        if conditions_hold(rule.conditions, facts):
            return rule, rule.action
    return None, rules.default


def _static_order(view: RoutingView, currency: str) -> list[str]:
    """The merchant's own accounts, then the platform's (in the platform's order for the currency
    where one is configured)."""
    own = [account.key for account in view.accounts if not account.platform]
    order = view.platform_order_by_currency.get(currency.upper()) or view.platform_order_by_currency.get(currency)
    platform = [account.key for account in view.accounts if account.platform]
    if order:
        platform = [key for key in order if key in platform]
    return own + platform


def _why_not(account: Account | None, facts: ChargeFacts) -> str | None:
    if account is None:
        return "unknown_account"
    if not account.enabled:
        return "disabled"
    if not facts.tokens.get(account.name):
        return "no_token"
    if not all(getattr(account.capabilities, capability) for capability in required_capabilities(facts)):
        return "capability_missing"
    return None


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _split(decision: Decision, action: Action, eligible: list[str], facts: ChargeFacts) -> list[str]:
    """The draw is the charge id's: the same charge always takes the same path. Accounts left out
    give their share to the others in proportion."""
    weights = {split.account: split.weight for split in action.splits if split.account in eligible}
    total = sum(weights.values())
    draw = _digest(f"{facts.charge_id}:{decision.rule}") % DRAW_RANGE
    point, cumulative, first = draw * total // DRAW_RANGE, 0, eligible[0]
    for key in eligible:
        cumulative += weights[key]
        if point < cumulative:
            first = key
            break
    decision.details.update(draw=draw, weights=weights)
    rest = sorted((key for key in eligible if key != first), key=lambda key: -weights[key])
    return [first, *rest]


def _cheapest(decision: Decision, eligible: list[str], view: RoutingView, facts: ChargeFacts) -> list[str]:
    """Cheapest first for the charge's amount; accounts with no fees for its currency after them,
    in the listed order."""
    costs: dict[str, int | None] = {}
    for key in eligible:
        account = view.by_key(key)
        fee = None if account is None else account.fees.get(facts.currency)
        costs[key] = None if fee is None else fee.cost(facts.amount)
    decision.details["costs"] = costs
    priced = sorted((key for key in eligible if costs[key] is not None), key=lambda key: costs[key] or 0)
    return priced + [key for key in eligible if costs[key] is None]
