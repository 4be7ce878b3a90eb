"""Adyen Checkout API (v71), the backup processor, over httpx."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from payorch.gateways.adyen import mapping
from payorch.gateways.adyen.config import AdyenConfig
from payorch.gateways.base import (
    GatewayError,
    GatewayNotification,
    GatewayResult,
    Outcome,
    PaymentRequest,
    VaultResult,
)
from payorch.gateways.transport import transport_outcome

_log = logging.getLogger(__name__)

TEST_BASE_URL = "https://checkout-test.adyen.com/v71"


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int | None
    """None when no HTTP answer came back."""
    body: Any = None
    failure: GatewayResult | None = None
    """Set when there is nothing to map: a transport error or a body that is not JSON."""


class AdyenGateway:
    """An Adyen merchant account: ``/payments`` with the attempt id as reference and Idempotency-Key."""

    def __init__(self, config: AdyenConfig) -> None:
        if config.base_url is None and config.environment not in ("sandbox", "test"):
            raise ValueError(f"gateway {config.name}: live Adyen needs base_url (the account's live prefix)")
        self.name = config.name
        self._api_key: SecretStr = config.api_key
        self._merchant_account = config.merchant_account
        self._hmac_key = config.webhook_secret
        self._http = httpx.AsyncClient(
            base_url=(config.base_url or TEST_BASE_URL).rstrip("/"),
            timeout=httpx.Timeout(config.timeout),
            follow_redirects=False,
        )

    async def verify_credentials(self) -> GatewayResult:
        """``/paymentMethods`` for the merchant account: authenticated, moves no money."""
        # No Idempotency-Key: a read moves nothing, and a replayed answer would be an old verdict.
        answer = await self._post("/paymentMethods", {"merchantAccount": self._merchant_account}, None)
        if answer.failure is not None:
            return answer.failure
        if answer.status in (401, 403):
            return GatewayResult(Outcome.NOT_SENT, code="credentials_refused", message="Adyen refused the key")
        if answer.status == 200:
            return GatewayResult(Outcome.APPROVED, code="verified")
        return GatewayResult(Outcome.UNKNOWN, code=str(answer.status), message="unexpected Adyen answer")

    async def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Authorise (manual capture) or authorise with immediate capture (``captureDelayHours`` 0)."""
        result, _status = await self._pay(request)
        return result

    async def capture(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Request capture of ``amount``; Adyen acknowledges (``received``) and confirms by webhook."""
        return await self._modify(f"/payments/{reference}/captures", amount, currency, idempotency_key)

    async def void(self, reference: str, idempotency_key: str) -> GatewayResult:
        """Cancel an authorisation that was not captured."""
        body = {"merchantAccount": self._merchant_account, "reference": idempotency_key}
        return self._modification_result(await self._post(f"/payments/{reference}/cancels", body, idempotency_key))

    async def refund(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Request a refund; the result's reference is the refund's own pspReference."""
        return await self._modify(f"/payments/{reference}/refunds", amount, currency, idempotency_key)

    async def lookup(self, request: PaymentRequest) -> GatewayResult:
        """Replay ``/payments`` with the same Idempotency-Key: Adyen answers with the first result.

        Checkout has no "get payment" call. If the original never ran, the replay runs it now (one
        attempt, charged at most once); if it is still running, Adyen says 704 and it stays UNKNOWN.
        """
        replay, status = await self._pay(request)
        return mapping.lookup_result(replay, status)

    async def complete_authentication(
        self, request: PaymentRequest, reference: str, details: Mapping[str, str]
    ) -> GatewayResult:
        """``/payments/details`` with what came back with the shopper (``redirectResult``, ...).

        Without details there is nothing to submit: the payment's first answer is replayed, and a
        completion is learnt from Adyen's AUTHORISATION notification. The key is derived from the
        details, so a repeated confirm is answered as the first was.
        """
        del reference  # Adyen finds the payment from the details themselves
        if not details:
            return await self.lookup(request)
        digest = hashlib.sha256(json.dumps(dict(details), sort_keys=True).encode()).hexdigest()[:16]
        answer = await self._post("/payments/details", mapping.details_body(details), f"{request.attempt_id}_{digest}")
        return self._payment_result(answer, request)

    async def vault(self, token: str, idempotency_key: str) -> VaultResult:
        """Store the card with a zero-value authorisation; the token names shopper and stored id."""
        if token.startswith(mapping.STORED_PREFIX):
            return VaultResult(Outcome.APPROVED, token=token)
        try:
            method, _shopper = mapping.payment_method_from_token(token)
        except ValueError as error:
            return VaultResult(Outcome.NOT_SENT, code="invalid_token", message=str(error), request_refused=True)
        body = mapping.vault_body(method, idempotency_key, self._merchant_account)
        answer = await self._post("/payments", body, idempotency_key)
        result = self._payment_result(answer, None)
        extra = answer.body.get("additionalData") if isinstance(answer.body, Mapping) else None
        stored_id = extra.get("tokenization.storedPaymentMethodId") if isinstance(extra, Mapping) else None
        if result.outcome is not Outcome.APPROVED or not isinstance(stored_id, str):
            return VaultResult(
                result.outcome,
                code=result.code or "not_stored",
                message=result.message,
                request_refused=result.request_refused,
            )
        stored = f"{mapping.STORED_PREFIX}{idempotency_key}:{stored_id}"
        return VaultResult(Outcome.APPROVED, token=stored, card=result.card, code=result.code)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayNotification:
        """Verify the item's HMAC signature (constant-time) and decode it."""
        del headers  # Adyen signs the notification item itself, not the HTTP request
        if self._hmac_key is None:
            raise GatewayError(f"gateway {self.name}: no Adyen HMAC key configured")
        try:
            item = mapping.single_notification_item(json.loads(body))
            verified = mapping.verify_notification_item(item, self._hmac_key.get_secret_value())
        except (ValueError, TypeError) as error:  # binascii.Error is a ValueError
            raise GatewayError(f"undecodable Adyen webhook: {type(error).__name__}") from error
        if not verified:
            raise GatewayError("Adyen webhook HMAC signature does not match")
        return mapping.notification_from_item(item)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    # -- internals ---------------------------------------------------------------------------------

    async def _pay(self, request: PaymentRequest) -> tuple[GatewayResult, int | None]:
        try:
            body = mapping.payment_body(request, self._merchant_account)
        except ValueError as error:
            # Nothing went out; a token Adyen cannot use is a reason to try the next gateway.
            return mapping.refused_token(str(error)), 400
        answer = await self._post("/payments", body, request.attempt_id)
        return self._payment_result(answer, request), answer.status

    async def _modify(self, path: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        body = {
            "merchantAccount": self._merchant_account,
            "reference": idempotency_key,
            "amount": {"currency": currency.upper(), "value": amount},
        }
        return self._modification_result(await self._post(path, body, idempotency_key))

    def _payment_result(self, answer: _Answer, request: PaymentRequest | None) -> GatewayResult:
        """``request`` None: a vaulting zero-value authorisation."""
        if answer.failure is not None:
            return answer.failure
        if answer.status == 200 and isinstance(answer.body, Mapping):
            return mapping.result_from_payment(
                answer.body,
                capture=request is not None and request.capture,
                account=self.name,
                return_url=None if request is None else request.presence.return_url,
            )
        return mapping.result_from_error(answer.status or 0, answer.body)

    def _modification_result(self, answer: _Answer) -> GatewayResult:
        if answer.failure is not None:
            return answer.failure
        if answer.status in (200, 201) and isinstance(answer.body, Mapping):
            return mapping.result_from_modification(answer.body)
        return mapping.result_from_error(answer.status or 0, answer.body)

    async def _post(self, path: str, body: Mapping[str, Any], idempotency_key: str | None) -> _Answer:
        headers = {"X-API-Key": self._api_key.get_secret_value()}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            response = await self._http.post(path, json=body, headers=headers)
        except httpx.HTTPError as error:
            outcome = transport_outcome(error)
            return _Answer(None, failure=GatewayResult(outcome, code=type(error).__name__, message="network error"))
        try:
            return _Answer(response.status_code, response.json())
        except ValueError:
            if response.is_success:
                failure = GatewayResult(Outcome.UNKNOWN, code="invalid_response", message="answer is not JSON")
                return _Answer(response.status_code, failure=failure)
            return _Answer(response.status_code, None)
