"""bench/charges_bench.py's ``--routing-rules N``: a configuration payorch accepts, of N rules that
the bench's charge falls through to the default (so the bench measures routing, not a changed path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from payorch.gateways.base import Capabilities
from payorch.orchestration.routing import Account, ChargeFacts, Router, RoutingView
from payorch.orchestration.routing_rules import RoutingRules, check_rules

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("count", [1, 5, 7, 20, 50])
async def test_every_rule_is_valid_and_the_bench_charge_falls_through_to_the_default(count: int) -> None:
    config = bench_module("routing_config").routing_config(count)
    rules = RoutingRules.model_validate(config)
    check_rules(rules, {"sandbox", "sandbox_backup"})
    assert len(rules.rules) == count
    assert len({rule.name for rule in rules.rules}) == count
    platform = tuple(
        Account(key, key, "sandbox", Capabilities(authorize=True, void=True), platform=True)
        for key in ("sandbox", "sandbox_backup")
    )
    view = RoutingView(platform, rules, version=1)
    # The bench's charge: 1050 USD, a sandbox test token, nothing known of the card.
    facts = ChargeFacts("ch_bench", 1050, "usd", False, True, {"sandbox": "tok_visa"})
    decision = await Router().decide(view, facts, lambda _key: False)
    assert (decision.rule, decision.strategy, decision.candidates) == (None, "priority", ["sandbox"])
