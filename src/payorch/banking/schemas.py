"""Request and response models of the bank link API, and the one function that renders a link."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from payorch.storage.bank_links import BankLink

UserReference = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]


class BankLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_reference: UserReference = Field(
        description="Your identifier for the end user linking a bank account (opaque to payorch, never a secret)."
    )


class BankLinkFailure(BaseModel):
    code: str
    message: str | None


class BankLinkOut(BaseModel):
    id: str = Field(description="`bl_...`")
    object: Literal["bank_link"] = "bank_link"
    livemode: bool
    status: Literal["pending", "active", "failed"]
    user_reference: str
    scopes: list[str]
    created: int
    expires_at: int = Field(description="When the authorization window (the `state`) expires, Unix seconds.")
    linked_at: int | None
    refreshed_at: int | None
    failure: BankLinkFailure | None


class BankLinkCreated(BankLinkOut):
    authorize_url: str = Field(
        description="Send the end user's browser here. It carries the single-use `state` and the PKCE challenge."
    )


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value.timestamp())


def render_bank_link(link: BankLink) -> dict[str, Any]:
    """The public shape of a link: status and timestamps, never a token or a secret's name."""
    failure = None if link.failure_code is None else {"code": link.failure_code, "message": link.failure_message}
    return {
        "id": link.id,
        "object": "bank_link",
        "livemode": link.livemode,
        "status": link.status,
        "user_reference": link.user_reference,
        "scopes": list(link.scopes),
        "created": int(link.created_at.timestamp()),
        "expires_at": int(link.expires_at.timestamp()),
        "linked_at": _seconds(link.linked_at),
        "refreshed_at": _seconds(link.refreshed_at),
        "failure": failure,
    }
