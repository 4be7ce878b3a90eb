"""``--routing-rules N`` of bench/charges_bench.py: the bench merchant's routing configuration as a
real merchant's would look (docs/routing.md): ``N`` rules on currency, amount, metadata, card
network, BIN and issuing country, none of which holds for the bench's charge (1050 USD on a sandbox
test token, no card facts), then a default priority list. Every charge of scenario 1 is routed
through all ``N`` rules before the default decides, as it is for a merchant whose rules are for
other traffic; without the option no configuration is stored and charges take the static order."""

from __future__ import annotations

from typing import Any

PLATFORM = ["sandbox", "sandbox_backup"]

# Each holds for part of a merchant's traffic, never for the bench's charge; the ones that start
# with its currency make the router read on to a later condition before passing over them.
_TEMPLATES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("eu_large", {"currency": ["eur", "gbp"], "amount": {"gte": 10_000}},
     {"strategy": "least_cost", "accounts": PLATFORM}),
    ("us_high_value", {"currency": ["usd"], "amount": {"gte": 500_000}},
     {"strategy": "priority", "accounts": list(reversed(PLATFORM))}),
    ("vip", {"metadata": {"tier": "vip"}},
     {"strategy": "success_rate", "accounts": PLATFORM}),
    ("amex", {"currency": ["usd", "cad"], "card_network": ["amex"]},
     {"strategy": "volume_split", "splits": [{"account": "sandbox", "weight": 70},
                                             {"account": "sandbox_backup", "weight": 30}]}),
    ("latam_cards", {"issuing_country": ["BR", "MX", "AR"]},
     {"strategy": "priority", "accounts": list(reversed(PLATFORM))}),
    ("debit_bins", {"currency": ["usd"], "bin_prefix": ["4571", "5019", "6011"]},
     {"strategy": "priority", "accounts": PLATFORM}),
    ("micro", {"amount": {"lt": 100}},
     {"strategy": "priority", "accounts": list(reversed(PLATFORM))}),
]  # fmt: skip


def routing_config(count: int) -> dict[str, Any]:
    """``count`` rules (the templates in turn, numbered) and the default priority list."""
    rules = []
    for index in range(count):
        name, conditions, action = _TEMPLATES[index % len(_TEMPLATES)]
        rules.append({"name": f"{name}_{index + 1}", "conditions": conditions, "action": action})
    return {"rules": rules, "default": {"strategy": "priority", "accounts": PLATFORM}}


async def store_routing(base_url: str, key: str, count: int, charge: dict[str, Any]) -> dict[str, Any]:
    """Store the configuration through the API and check, with a dry run of the bench's charge,
    that it falls through every rule to the default: what the bench then measures."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        stored = await client.put("/v1/routing", json=routing_config(count), headers=headers)
        if stored.status_code != 200:
            raise SystemExit(f"PUT /v1/routing answered {stored.status_code}: {stored.text}")
        dry = await client.post("/v1/routing/evaluate", json=charge, headers=headers)
    decision: dict[str, Any] = dry.json()
    if dry.status_code != 200 or decision["rule"] is not None or decision["candidates"][:1] != PLATFORM[:1]:
        raise SystemExit(f"the bench's charge should fall through to the default: {dry.status_code} {dry.text}")
    return {"rules": count, "version": stored.json()["current"]["version"], "decision": decision}
