"""What a charge's payment method tells routing before any gateway is called (docs/routing.md):
its tokens, and the card's network, BIN and issuing country. One place for the charge path and
for ``POST /v1/routing/evaluate``, so a dry run reads the payment method as the charge does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from payorch.errors import InvalidRequest
from payorch.orchestration.routing import CardFacts
from payorch.payments.schemas import TokensPaymentMethod
from payorch.security.api_keys import Caller
from payorch.storage import payment_methods as repo
from payorch.storage.payment_methods import PaymentMethod
from payorch.storage.sql import Connection


@dataclass(frozen=True, slots=True)
class PaymentMethodFacts:
    tokens: Mapping[str, str]
    """By account name."""
    card: CardFacts
    param: str
    """The request field an unroutable payment method is answered about."""


def card_facts(payment_method: TokensPaymentMethod | PaymentMethod) -> PaymentMethodFacts:
    """Tokens: what the frontend said of the card (``payment_method.card``). A vaulted ``pm_``: what
    its gateways told when it was vaulted."""
    if isinstance(payment_method, TokensPaymentMethod):
        hint = payment_method.card
        card = CardFacts() if hint is None else CardFacts(hint.network, hint.bin, hint.country)
        return PaymentMethodFacts(payment_method.tokens, card, "payment_method.tokens")
    card = CardFacts(payment_method.card_brand, payment_method.card_bin, payment_method.card_country)
    return PaymentMethodFacts(payment_method.tokens, card, "payment_method")


async def vaulted(connection: Connection, caller: Caller, payment_method_id: str) -> PaymentMethod:
    """The caller's ``pm_`` of the caller's mode; another merchant's or mode's is the same 400 as none."""
    found = await repo.get_payment_method(connection, caller.merchant_id, payment_method_id, livemode=caller.livemode)
    if found is None:
        raise InvalidRequest(
            f"No such payment_method: '{payment_method_id}'.", param="payment_method", code="resource_missing"
        )
    return found
