"""Request and response models of ``/v1/gateway_accounts`` and ``/v1/routing``, and their renderers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from payorch.money import MAX_AMOUNT, CurrencyCode
from payorch.orchestration.routing_rules import RoutingRules
from payorch.payments.schemas import MetadataKey, MetadataValue, PaymentMethodParam
from payorch.storage.gateway_accounts import AccountRow, RoutingRow

AccountName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class FeeIn(_Strict):
    percent_bps: int = Field(default=0, ge=0, le=10_000, description="Hundredths of a percent (290 = 2.90%).")
    fixed: int = Field(default=0, ge=0, le=MAX_AMOUNT, description="Minor units of the fee's currency.")


class AccountCreate(_Strict):
    gateway: str = Field(
        description="The gateway package: sandbox, stripe, ... (`GET /v1/gateway_accounts` lists them)."
    )
    name: AccountName = Field(description="Unique per merchant: what `payment_method.tokens` are keyed by.")
    credentials: dict[str, Any] = Field(
        default_factory=dict, max_length=20, description="The gateway's own credential fields (docs/routing.md)."
    )
    timeout_ms: int | None = Field(default=None, gt=0, le=60_000)
    fees: dict[CurrencyCode, FeeIn] = Field(default_factory=dict, max_length=200)
    enabled: StrictBool = True
    verify: StrictBool = Field(default=False, description="Make one cheap authenticated call before storing.")


class AccountUpdate(_Strict):
    name: AccountName | None = None
    credentials: dict[str, Any] | None = Field(default=None, max_length=20, description="Replaces every credential.")
    timeout_ms: int | None = Field(default=None, gt=0, le=60_000)
    fees: dict[CurrencyCode, FeeIn] | None = Field(default=None, max_length=200)
    enabled: StrictBool | None = None
    verify: StrictBool = False


class CredentialsOut(BaseModel):
    fingerprint: str = Field(description="Changes when any credential changes; never reveals one.")
    last4: str = Field(description="The last 4 characters of the main secret (empty when there is none).")


class AccountOut(BaseModel):
    id: str
    object: Literal["gateway_account"] = "gateway_account"
    gateway: str
    name: str
    livemode: bool
    enabled: bool
    timeout_ms: int | None
    fees: dict[str, FeeIn]
    credentials: CredentialsOut
    webhook_path: str = Field(description="Where this account's gateway sends its notifications.")
    created: int
    updated: int


class AccountList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AccountOut]
    platform: list[str] = Field(description="The platform's accounts, usable unless one of yours has the name.")


class AccountDeleted(BaseModel):
    id: str
    object: Literal["gateway_account"] = "gateway_account"
    deleted: Literal[True] = True


def render_account(row: AccountRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "gateway_account",
        "gateway": row.kind,
        "name": row.name,
        "livemode": row.livemode,
        "enabled": row.enabled,
        "timeout_ms": row.timeout_ms,
        "fees": row.fees,
        "credentials": {"fingerprint": row.fingerprint, "last4": row.secret_last4},
        "webhook_path": f"/v1/gateway_webhooks/{row.id}",
        "created": int(row.created_at.timestamp()),
        "updated": int(row.updated_at.timestamp()),
    }


class RoutingVersionOut(BaseModel):
    version: int
    config: dict[str, Any]
    created: int


class RoutingOutDoc(BaseModel):
    object: Literal["routing"] = "routing"
    current: RoutingVersionOut | None = Field(description="null: no configuration stored (the static order).")
    history: list[RoutingVersionOut] = Field(description="Earlier versions, newest first.")


def render_version(row: RoutingRow) -> dict[str, Any]:
    return {"version": row.version, "config": row.config, "created": int(row.created_at.timestamp())}


RoutingPut = RoutingRules


class EvaluateRequest(_Strict):
    amount: int = Field(gt=0, le=MAX_AMOUNT)
    currency: CurrencyCode
    payment_method: PaymentMethodParam
    capture: StrictBool = True
    metadata: dict[MetadataKey, MetadataValue] = Field(default_factory=dict, max_length=50)


class EvaluateOut(BaseModel):
    object: Literal["routing_evaluation"] = "routing_evaluation"
    version: int | None
    rule: str | None
    strategy: str
    candidates: list[str]
    skipped: dict[str, str]
    details: dict[str, Any] | None = None
