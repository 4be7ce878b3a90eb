"""Request and response models of the charge API, and the one function that renders a charge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
)

from payorch.money import MAX_AMOUNT, CurrencyCode
from payorch.storage.charges import Charge

GatewayName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")]
MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetadataValue = Annotated[str, StringConstraints(max_length=500)]
PaymentMethodId = Annotated[str, StringConstraints(pattern=r"^pm_[0-9a-z]{26}$")]
ReturnUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[^\s]+$")]
PassedThroughKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardHint(StrictModel):
    """What the frontend's tokenization told of the card, for routing rules (docs/routing.md). Never
    the number: a network, the first digits (BIN) and the issuing country."""

    network: Annotated[str, StringConstraints(pattern=r"^[a-z_]{2,20}$")] | None = None
    bin: Annotated[str, StringConstraints(pattern=r"^[0-9]{6,8}$")] | None = None
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] | None = None


class TokensPaymentMethod(StrictModel):
    """Single-use or reusable tokens from each gateway's own SDK, keyed by gateway account name."""

    tokens: dict[GatewayName, Token] = Field(min_length=1, max_length=8)
    card: CardHint | None = None


def _payment_method_kind(value: Any) -> str:
    return "__id" if isinstance(value, str) else "__tokens"


# One branch is validated, chosen by the input's shape, so errors name the real problem. Tags start
# with "__" and are left out of the error's ``param``.
PaymentMethodParam = Annotated[
    Annotated[PaymentMethodId, Tag("__id")] | Annotated[TokensPaymentMethod, Tag("__tokens")],
    Discriminator(_payment_method_kind),
]


class ChargeCreate(StrictModel):
    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT, description="In the currency's minor unit (cents, yen, fils).")
    currency: CurrencyCode = Field(description="ISO 4217, case-insensitive.")
    payment_method: PaymentMethodParam = Field(
        description='A stored `pm_...` id, or `{"tokens": {"<gateway>": "<token or nonce>"}}`.'
    )
    capture: StrictBool = True
    description: Annotated[str, StringConstraints(max_length=1000)] | None = None
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=50)
    return_url: ReturnUrl | None = Field(
        default=None,
        description="Where the customer's browser comes back to after authenticating (3-D Secure) at a "
        "page the gateway or the sandbox shows; without it a gateway that wants authentication answers "
        "a `gateway_sdk` next action for its frontend SDK.",
    )
    setup_future_usage: Literal["off_session"] | None = Field(
        default=None,
        description="The customer is present and agrees to later charges without them: the card's network "
        "transaction id is kept with the `pm_` payment method for those charges.",
    )
    off_session: StrictBool = Field(
        default=False,
        description="A merchant-initiated charge with no customer present. If the issuer still wants the "
        "customer to authenticate, the answer is 402 `authentication_required` with a `next_action` "
        "the merchant can send the customer.",
    )
    browser_info: dict[PassedThroughKey, StrictStr | StrictInt | StrictBool] | None = Field(
        default=None,
        max_length=20,
        description="The shopper's browser, passed through to gateways that take it for 3-D Secure 2 "
        "(the 3-D Secure 2 `browserInfo` object: userAgent, acceptHeader, screen size, ...).",
    )
    authentication_data: dict[PassedThroughKey, Any] | None = Field(
        default=None,
        max_length=20,
        description="Passed through to gateways that take it (an `authenticationData` object, e.g. "
        "`{threeDSRequestData: {nativeThreeDS: preferred}}`).",
    )


class CardOut(BaseModel):
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


class RoutingOut(BaseModel):
    """How the charge was routed (docs/routing.md)."""

    version: int | None = Field(description="The routing configuration's version; null: none was stored.")
    rule: str | None = Field(description="The matched rule; null: the default or the static order.")
    strategy: Literal["priority", "volume_split", "success_rate", "least_cost"]
    candidates: list[str] = Field(description="The accounts in the order they were to be tried.")
    skipped: dict[str, str] = Field(description="Every other account, and why it was left out.")
    details: dict[str, Any] | None = Field(default=None, description="What the strategy weighed.")


class RedirectToUrl(BaseModel):
    url: str
    """Send the customer's browser here."""
    return_url: str | None
    """Where it comes back to when the customer is done."""


class GatewaySdkAction(BaseModel):
    """Passed through as the gateway gave it: Stripe.js ``handleNextAction({clientSecret})``, or
    Adyen's Drop-in ``handleAction(action)``."""

    model_config = ConfigDict(extra="allow")
    gateway: str
    account: str
    client_secret: str | None = None
    action: dict[str, Any] | None = None


class NextActionOut(BaseModel):
    """What the customer's frontend does to authenticate (docs/authentication.md)."""

    type: Literal["redirect_to_url", "gateway_sdk"]
    redirect_to_url: RedirectToUrl | None = None
    gateway_sdk: GatewaySdkAction | None = None


class AuthenticationOut(BaseModel):
    status: Literal["required", "succeeded", "attempted", "failed", "not_required", "unavailable", "expired"]
    version: str | None
    liability_shifted: bool | None


class ChargeOut(BaseModel):
    id: str
    object: Literal["charge"] = "charge"
    amount: int
    amount_captured: int
    amount_refunded: int
    currency: str
    status: Literal["pending", "processing", "requires_action", "authorized", "succeeded", "failed", "canceled"]
    captured: bool
    refunded: bool
    livemode: bool
    payment_method: str | None
    card: CardOut | None
    gateway: str | None
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    decline_code: str | None
    description: str | None
    metadata: dict[str, str]
    routing: RoutingOut | None = None
    next_action: NextActionOut | None
    """Set while ``requires_action``: what the customer must do."""
    authentication: AuthenticationOut | None
    """The customer authentication's outcome (3-D Secure), when there was one."""
    created: int
    updated: int


class ChargeList(BaseModel):
    object: Literal["list"] = "list"
    url: str
    has_more: bool
    data: list[ChargeOut]


class ErrorBody(BaseModel):
    type: Literal[
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "rate_limit_error",
        "idempotency_error",
        "card_error",
        "gateway_error",
        "api_error",
    ]
    code: str
    message: str
    param: str | None = None
    decline_code: str | None = None
    charge: str | None = None
    next_action: NextActionOut | None = None
    """An off-session charge the issuer wants authenticated: what to send the customer."""
    request_id: str


class ErrorEnvelope(BaseModel):
    error: ErrorBody


def render_charge(charge: Charge) -> dict[str, Any]:
    """The public shape of a charge. Never a card number: brand, last four and expiry only."""
    card = None
    if charge.card_last4 is not None or charge.card_brand is not None:
        card = {
            "brand": charge.card_brand,
            "last4": charge.card_last4,
            "exp_month": charge.card_exp_month,
            "exp_year": charge.card_exp_year,
        }
    return {
        "id": charge.id,
        "object": "charge",
        "amount": charge.amount,
        "amount_captured": charge.amount_captured,
        "amount_refunded": charge.amount_refunded,
        "currency": charge.currency,
        "status": charge.status,
        "captured": charge.amount_captured > 0,
        "refunded": charge.amount_refunded > 0 and charge.amount_refunded == charge.amount_captured,
        "livemode": charge.livemode,
        "payment_method": charge.payment_method,
        "card": card,
        "gateway": charge.gateway,
        "gateway_reference": charge.gateway_reference,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "decline_code": charge.decline_code,
        "description": charge.description,
        "metadata": charge.metadata,
        "routing": charge.routing,
        "next_action": charge.next_action,
        "authentication": charge.authentication,
        "created": int(charge.created_at.timestamp()),
        "updated": int(charge.updated_at.timestamp()),
    }
