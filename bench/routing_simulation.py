"""success_rate routing against the static order and an oracle: three sandbox accounts whose
approval rates (92%, 85%, 70% by default) drift halfway through (the best becomes the worst).

Drives payorch's own Router and success-rate statistics in process (Redis when --redis is given,
as API replicas share them), with a simulated clock so the sliding window slides. Prints the auth
rate of each policy and how many charges after the drift success_rate needed to move its traffic
to the new best account. Results: docs/benchmarks.md.

    python bench/routing_simulation.py --charges 20000 --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets

from payorch.gateways.base import Capabilities, GatewayResult, Outcome
from payorch.orchestration.routing import Account, CardFacts, ChargeFacts, Router, RoutingView
from payorch.orchestration.routing_rules import RoutingRules
from payorch.orchestration.routing_stats import MemorySuccessRates, RedisSuccessRates, attributable

KEYS = ("ga_one", "ga_two", "ga_three")


async def simulate(args: argparse.Namespace) -> None:
    before = dict(zip(KEYS, args.rates, strict=True))
    after = dict(zip(KEYS, reversed(args.rates), strict=True))
    clock = [0.0]
    redis = None
    if args.redis:
        from redis.asyncio import Redis

        redis = Redis.from_url(args.redis)
        store: MemorySuccessRates | RedisSuccessRates = RedisSuccessRates(
            redis, args.window, prefix=f"payorch:sim:{secrets.token_hex(4)}", clock=lambda: clock[0]
        )
    else:
        store = MemorySuccessRates(args.window, clock=lambda: clock[0])
    accounts = tuple(Account(key, key, "sandbox", Capabilities(authorize=True, void=True)) for key in KEYS)
    rules = RoutingRules.model_validate({"default": {"strategy": "success_rate", "accounts": list(KEYS)}})
    view = RoutingView(accounts, rules, 1)
    router = Router(store, exploration=args.exploration)
    rng = random.Random(args.seed)
    approved = {"success_rate": 0, "static": 0, "oracle": 0}
    drift_at, noticed_at, recent = args.charges // 2, None, []
    for n in range(args.charges):
        clock[0] += args.seconds_per_charge
        rates = before if n < drift_at else after
        draw = rng.random()  # one customer, one card: the same draw for every policy
        facts = ChargeFacts(f"ch_{n}", 1000, "usd", True, True, dict.fromkeys(KEYS, "tok_visa"), card=CardFacts("visa"))
        decision = await router.decide(view, facts, lambda _key: False)
        chosen = decision.candidates[0]
        ok = draw < rates[chosen]
        result = GatewayResult(Outcome.APPROVED if ok else Outcome.SOFT_DECLINE)
        if attributable(result) is not None:
            await store.record(chosen, "usd", "visa", ok)
        approved["success_rate"] += ok
        approved["static"] += draw < rates[KEYS[0]]
        approved["oracle"] += draw < max(rates.values())
        if n >= drift_at and noticed_at is None:
            recent.append(chosen == max(after, key=after.__getitem__))
            recent = recent[-200:]
            if len(recent) == 200 and sum(recent) >= 150:
                noticed_at = n - drift_at - 199
    if redis is not None:
        await redis.aclose()
    print(f"charges {args.charges}, rates {args.rates} drifting to {list(reversed(args.rates))} at {drift_at}")
    for policy, count in approved.items():
        print(f"{policy:>12}: auth rate {count / args.charges:.2%}")
    print(f"drift noticed (75% of 200 charges on the new best) after {noticed_at} charges")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--charges", type=int, default=20_000)
    parser.add_argument("--rates", type=float, nargs=3, default=[0.92, 0.85, 0.70])
    parser.add_argument("--window", type=int, default=900, help="the sliding window, seconds")
    parser.add_argument("--seconds-per-charge", type=float, default=0.2, help="simulated time between charges")
    parser.add_argument("--exploration", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--redis", help="share the statistics through this Redis (as API replicas do)")
    asyncio.run(simulate(parser.parse_args()))


if __name__ == "__main__":
    main()
