"""The router's conditions and strategies, the configuration checks and the success-rate
statistics' attribution, without a database (the integration tests route real charges)."""

from __future__ import annotations

import pytest

from payorch.gateways.base import Capabilities, GatewayResult, Outcome
from payorch.orchestration.routing import Account, CardFacts, ChargeFacts, Fee, Router, RoutingView
from payorch.orchestration.routing_rules import InvalidRouting, RoutingRules, check_rules
from payorch.orchestration.routing_stats import MemorySuccessRates, attributable

CAN = Capabilities(authorize=True, void=True)
ACCOUNTS = (
    Account("ga_a", "a", "sandbox", CAN, fees={"usd": Fee(290, 30)}),
    Account("ga_b", "b", "sandbox", CAN, fees={"usd": Fee(100, 50)}),
    Account("ga_c", "c", "sandbox", Capabilities(authorize=True, void=False)),
    Account("sandbox", "sandbox", "sandbox", CAN, platform=True),
)
TOKENS = {"a": "tok_visa", "b": "tok_visa", "c": "tok_visa"}


def facts(**changes: object) -> ChargeFacts:
    values: dict[str, object] = {
        "charge_id": "ch_1", "amount": 1000, "currency": "usd", "livemode": False, "capture": True,
        "tokens": TOKENS, "metadata": {}, "card": CardFacts(),
    }  # fmt: skip
    values.update(changes)
    return ChargeFacts(**values)  # type: ignore[arg-type]


def view(config: dict[str, object] | None) -> RoutingView:
    rules = None if config is None else RoutingRules.model_validate(config)
    return RoutingView(ACCOUNTS, rules, None if rules is None else 3)


def first_rule(conditions: dict[str, object]) -> dict[str, object]:
    return {
        "rules": [{"name": "r", "conditions": conditions, "action": {"strategy": "priority", "accounts": ["ga_b"]}}],
        "default": {"strategy": "priority", "accounts": ["ga_a"]},
    }


async def decide(config: dict[str, object] | None, charge: ChargeFacts, router: Router | None = None) -> object:
    return await (router or Router()).decide(view(config), charge, lambda key: key == "open")


@pytest.mark.parametrize(
    ("conditions", "matching", "other"),
    [
        ({"currency": ["usd"]}, facts(), facts(currency="eur")),
        ({"amount": {"gte": 500, "lt": 2000}}, facts(amount=500), facts(amount=2000)),
        ({"card_network": ["visa"]}, facts(card=CardFacts(network="visa")), facts()),
        ({"bin_prefix": ["4242"]}, facts(card=CardFacts(bin="424242")), facts(card=CardFacts(bin="555555"))),
        ({"issuing_country": ["DE"]}, facts(card=CardFacts(country="DE")), facts(card=CardFacts(country="FR"))),
        ({"metadata": {"tier": "vip"}}, facts(metadata={"tier": "vip"}), facts(metadata={"tier": "basic"})),
        ({"livemode": True}, facts(livemode=True), facts()),
    ],
)
async def test_each_condition_matches_only_its_charges(
    conditions: dict[str, object], matching: ChargeFacts, other: ChargeFacts
) -> None:
    hit = await decide(first_rule(conditions), matching)
    miss = await decide(first_rule(conditions), other)
    assert (hit.rule, hit.candidates) == ("r", ["ga_b"])  # type: ignore[attr-defined]
    assert (miss.rule, miss.candidates) == (None, ["ga_a"])  # type: ignore[attr-defined]
    assert miss.skipped["ga_b"] == "not_in_rule"  # type: ignore[attr-defined]


async def test_every_other_account_is_explained() -> None:
    decision = await decide(None, facts(capture=False, tokens={"a": "t", "c": "t"}))
    assert decision.strategy == "priority"  # type: ignore[attr-defined]
    assert decision.candidates == ["ga_a"]  # type: ignore[attr-defined]
    assert decision.skipped == {"ga_b": "no_token", "ga_c": "capability_missing", "sandbox": "no_token"}  # type: ignore[attr-defined]


async def test_least_cost_orders_by_integer_fees_and_puts_unpriced_last() -> None:
    config = {"default": {"strategy": "least_cost", "accounts": ["ga_c", "ga_a", "ga_b"]}}
    decision = await decide(config, facts(amount=1000))
    assert decision.candidates == ["ga_a", "ga_b", "ga_c"]  # type: ignore[attr-defined]
    assert decision.details["costs"] == {"ga_a": 59, "ga_b": 60, "ga_c": None}  # type: ignore[attr-defined]
    assert Fee(290, 30).cost(1001) == 30 + 30  # 29.029 rounds up to 30
    cheap_for_big = await decide(config, facts(amount=100_000))
    assert cheap_for_big.candidates[0] == "ga_b"  # type: ignore[attr-defined]


async def test_volume_split_is_deterministic_by_charge_and_follows_the_weights() -> None:
    config = {"default": {"strategy": "volume_split", "splits": [{"account": "ga_a", "weight": 70},
                                                                 {"account": "ga_b", "weight": 30}]}}  # fmt: skip
    firsts = []
    for n in range(2000):
        decision = await decide(config, facts(charge_id=f"ch_{n}"))
        again = await decide(config, facts(charge_id=f"ch_{n}"))
        assert decision.candidates == again.candidates  # type: ignore[attr-defined]
        firsts.append(decision.candidates[0])  # type: ignore[attr-defined]
    share = firsts.count("ga_a") / len(firsts)
    assert 0.65 < share < 0.75


async def test_success_rate_prefers_the_account_that_approves_and_falls_back_without_statistics() -> None:
    rates = MemorySuccessRates(window_seconds=900)
    for _ in range(200):
        await rates.record("ga_a", "usd", "visa", False)
        await rates.record("ga_b", "usd", "visa", True)
    router = Router(rates, exploration=0.0)
    config = {"default": {"strategy": "success_rate", "accounts": ["ga_a", "ga_b"]}}
    decision = await decide(config, facts(card=CardFacts(network="visa")), router)
    assert decision.candidates == ["ga_b", "ga_a"]  # type: ignore[attr-defined]
    assert decision.details["observed"]["ga_b"] == {"approved": 200, "failed": 0}  # type: ignore[attr-defined]

    class Down:
        async def counts(self, *_: object) -> None:
            return None

    fallback = await decide(config, facts(), Router(Down()))
    assert fallback.candidates == ["ga_a", "ga_b"]  # type: ignore[attr-defined]
    assert fallback.details["fallback"] == "statistics_unavailable"  # type: ignore[attr-defined]


def test_only_outcomes_that_speak_of_the_gateway_count() -> None:
    assert attributable(GatewayResult(Outcome.APPROVED)) is True
    assert attributable(GatewayResult(Outcome.SOFT_DECLINE)) is False
    assert attributable(GatewayResult(Outcome.UNKNOWN)) is False
    assert attributable(GatewayResult(Outcome.NOT_SENT, code="503")) is False
    assert attributable(GatewayResult(Outcome.HARD_DECLINE, decline_code="insufficient_funds")) is None
    assert attributable(GatewayResult(Outcome.NOT_SENT, request_refused=True)) is None
    assert attributable(GatewayResult(Outcome.NOT_SENT, code="breaker_open")) is None


@pytest.mark.parametrize(
    ("config", "param", "words"),
    [
        ({"default": {"strategy": "priority", "accounts": []}}, "default.accounts", "at least one"),
        ({"default": {"strategy": "priority", "accounts": ["ga_x"]}}, "default.accounts[0]", "no account"),
        ({"rules": [{"name": "eu", "action": {"strategy": "priority", "accounts": ["ga_a", "ga_a"]}}]},
         "rules[0].action.accounts[1]", "Rule 'eu'"),
        ({"rules": [{"name": "w", "action": {"strategy": "volume_split",
                                             "splits": [{"account": "ga_a", "weight": 50}]}}]},
         "rules[0].action.splits", "add up to 50"),
        ({"rules": [{"name": "r", "conditions": {"amount": {"gte": 10, "lt": 5}},
                     "action": {"strategy": "priority", "accounts": ["ga_a"]}}]},
         "rules[0].conditions.amount", "below"),
    ],
)  # fmt: skip
def test_invalid_configurations_name_the_rule(config: dict[str, object], param: str, words: str) -> None:
    with pytest.raises(InvalidRouting) as refused:
        check_rules(RoutingRules.model_validate(config), {"ga_a", "ga_b"})
    assert refused.value.param == param
    assert words in str(refused.value)
