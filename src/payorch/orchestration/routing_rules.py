"""A merchant's routing configuration: ordered rules (conditions and an action) and a default.

The models check shape; :func:`check_rules` checks meaning against the merchant's accounts and
names the rule at fault. docs/routing.md documents every condition and action.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from payorch.money import MAX_AMOUNT, CurrencyCode

Strategy = Literal["priority", "volume_split", "success_rate", "least_cost"]
AccountRef = Annotated[str, StringConstraints(min_length=1, max_length=64)]
"""A merchant account's id (``ga_...``) or a platform account's name (``sandbox``)."""
RuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MAX_RULES = 50
WEIGHT_TOTAL = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Split(_Strict):
    account: AccountRef
    weight: int = Field(ge=1, le=WEIGHT_TOTAL)
    """Whole percent; a volume split's weights add up to 100."""


class Action(_Strict):
    strategy: Strategy
    accounts: list[AccountRef] = Field(default_factory=list, max_length=16)
    """priority, success_rate, least_cost: the accounts, in the order they are tried (priority) or
    the order fallen back to (success_rate without statistics, least_cost without fees)."""
    splits: list[Split] = Field(default_factory=list, max_length=16)
    """volume_split: each account's share of charges."""

    def listed(self) -> list[str]:
        return [split.account for split in self.splits] if self.strategy == "volume_split" else list(self.accounts)


class AmountRange(_Strict):
    gte: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    """At least this, in the charge currency's minor unit."""
    lt: int | None = Field(default=None, ge=1, le=MAX_AMOUNT)
    """Less than this."""


class Conditions(_Strict):
    """All present conditions must hold. A card condition holds only when the card fact is known
    before the call (docs/routing.md); an unknown fact never matches."""

    currency: list[CurrencyCode] | None = Field(default=None, min_length=1, max_length=50)
    amount: AmountRange | None = None
    card_network: list[Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,20}$")]] | None = Field(
        default=None, min_length=1, max_length=20
    )
    bin_prefix: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,8}$")]] | None = Field(
        default=None, min_length=1, max_length=100
    )
    issuing_country: list[Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]] | None = Field(
        default=None, min_length=1, max_length=250
    )
    metadata: dict[Annotated[str, StringConstraints(min_length=1, max_length=40)], str] | None = Field(
        default=None, min_length=1, max_length=10
    )
    livemode: bool | None = None


class Rule(_Strict):
    name: RuleName
    conditions: Conditions = Field(default_factory=Conditions)
    action: Action


class RoutingRules(_Strict):
    """``PUT /v1/routing``'s body: the rules, tried in order, and what routes a charge none matches."""

    rules: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    default: Action | None = None
    """Unset: the static order (your accounts by creation, then the platform's)."""


class InvalidRouting(ValueError):
    """A configuration that cannot route: ``param`` names the rule and field, the message the rule."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def check_rules(config: RoutingRules, known_accounts: Collection[str]) -> None:
    """Refuse a configuration naming an unknown account, with an empty list, a repeated account,
    weights that do not add up, an empty amount range or a repeated rule name."""
    seen: set[str] = set()
    for index, rule in enumerate(config.rules):
        where = f"rules[{index}]"
        if rule.name in seen:
            raise InvalidRouting(f"Rule '{rule.name}': the name is used by an earlier rule.", f"{where}.name")
        seen.add(rule.name)
        amount = rule.conditions.amount
        if amount is not None and amount.gte is not None and amount.lt is not None and amount.gte >= amount.lt:
            raise InvalidRouting(
                f"Rule '{rule.name}': amount.gte must be below amount.lt.", f"{where}.conditions.amount"
            )
        _check_action(rule.action, f"Rule '{rule.name}'", f"{where}.action", known_accounts)
    if config.default is not None:
        _check_action(config.default, "The default", "default", known_accounts)


def _check_action(action: Action, label: str, where: str, known: Collection[str]) -> None:
    field = "splits" if action.strategy == "volume_split" else "accounts"
    other = "accounts" if field == "splits" else "splits"
    if getattr(action, other):
        raise InvalidRouting(f"{label}: {action.strategy} takes '{field}', not '{other}'.", f"{where}.{other}")
    listed = action.listed()
    if not listed:
        raise InvalidRouting(f"{label}: {action.strategy} needs at least one account in '{field}'.", f"{where}.{field}")
    for position, account in enumerate(listed):
        suffix = f"{field}[{position}]" + (".account" if field == "splits" else "")
        if account not in known:
            raise InvalidRouting(f"{label}: no account '{account}'.", f"{where}.{suffix}")
        if listed.index(account) != position:
            raise InvalidRouting(f"{label}: account '{account}' is listed twice.", f"{where}.{suffix}")
    if action.strategy == "volume_split":
        total = sum(split.weight for split in action.splits)
        if total != WEIGHT_TOTAL:
            raise InvalidRouting(f"{label}: the weights add up to {total}, not {WEIGHT_TOTAL}.", f"{where}.splits")
