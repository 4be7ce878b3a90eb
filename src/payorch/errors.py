"""The API's error hierarchy. Each error carries its HTTP meaning and renders to the envelope:

``{"error": {"type", "code", "message", "param"?, "decline_code"?, "charge"?, "request_id"}}``
"""

from __future__ import annotations

from typing import Any, ClassVar

from payorch.audit.redaction import redact_text


class ApiError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        decline_code: str | None = None,
        charge: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.error_code = code or self.code
        self.decline_code = decline_code
        self.charge = charge
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        # A message or param may echo what the caller sent (an unknown field's name, an id from the
        # URL): credentials and card numbers in it are masked, as in logs (DESIGN.md section 11).
        error: dict[str, Any] = {"type": self.type, "code": self.error_code, "message": redact_text(self.message)}
        if self.param is not None:
            error["param"] = redact_text(self.param)
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        if self.charge is not None:
            error["charge"] = self.charge
        error["request_id"] = request_id
        return {"error": error}


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "parameter_invalid"


class CardDataNotAllowed(InvalidRequest):
    code = "card_data_not_allowed"


class NotFound(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "resource_missing"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class RequestTimeout(ApiError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ApiError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class IdempotencyMismatch(ApiError):
    status = 400
    type = "idempotency_error"
    code = "idempotency_key_reused"


class IdempotencyInProgress(ApiError):
    status = 409
    type = "idempotency_error"
    code = "idempotency_key_in_use"


class InvalidState(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "charge_invalid_state"


class CardDeclined(ApiError):
    status = 402
    type = "card_error"
    code = "card_declined"


class NoGatewayAvailable(ApiError):
    status = 503
    type = "gateway_error"
    code = "gateway_unavailable"


class GatewayRefused(ApiError):
    """The gateway answered and refused a capture, void or refund: nothing moved."""

    status = 402
    type = "gateway_error"
    code = "gateway_refused"


class GatewayOutcomeUnknown(ApiError):
    """The gateway's answer was lost (timeout, 5xx): it may have acted. Retrying is safe, since the
    gateway receives the same idempotency key and does the operation at most once."""

    status = 502
    type = "gateway_error"
    code = "gateway_outcome_unknown"


class AuthenticationRequired(CardDeclined):
    """An off-session charge the issuer wants the customer to authenticate: the charge waits in
    ``requires_action``, and ``next_action`` is what the merchant sends the customer (as Stripe does)."""

    code = "authentication_required"

    def __init__(self, message: str, *, charge: str, next_action: dict[str, Any] | None) -> None:
        super().__init__(message, decline_code="authentication_required", charge=charge)
        self.next_action = next_action

    def body(self, request_id: str) -> dict[str, Any]:
        body = super().body(request_id)
        if self.next_action is not None:
            error = body["error"]
            body["error"] = {**{k: v for k, v in error.items() if k != "request_id"},
                             "next_action": self.next_action, "request_id": request_id}  # fmt: skip
        return body
