"""Stripe through the official SDK: one StripeClient per gateway, async methods, no global state."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
import stripe

from payorch.gateways.base import (
    GatewayError,
    GatewayNotification,
    GatewayResult,
    Outcome,
    PaymentRequest,
    VaultResult,
)
from payorch.gateways.stripe import mapping
from payorch.gateways.stripe.config import StripeConfig

_log = logging.getLogger(__name__)

_IN_FLIGHT = "idempotency_key_in_use"


class _ContentHTTPXClient(stripe.HTTPXClient):
    """``stripe.HTTPXClient`` that hands httpx the encoded form body as ``content=``.

    The SDK passes it as ``data=<str>``, which httpx deprecates with a DeprecationWarning on every
    POST; under a warnings-as-errors policy the SDK would turn that into a connection error. The
    bytes on the wire are the same.
    """

    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> tuple[list[Any], dict[str, Any]]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        body = kwargs.pop("data", None)
        if body:
            kwargs["content"] = body
        return args, kwargs


class StripeGateway:
    """A Stripe account: PaymentIntents created and confirmed in one call, keyed by the attempt id."""

    def __init__(self, config: StripeConfig) -> None:
        self.name = config.name
        self._request_three_d_secure = config.request_three_d_secure
        self._webhook_secret = config.webhook_secret
        self._webhook_tolerance = config.webhook_tolerance_seconds
        # The SDK never retries (max_network_retries=0): a retry is the executor's decision, made with
        # the same idempotency key through lookup(). One timeout for connect, write, read and pool.
        self._http = _ContentHTTPXClient(timeout=httpx.Timeout(config.timeout))
        self._client = stripe.StripeClient(
            config.api_key.get_secret_value(),
            base_addresses={"api": config.base_url} if config.base_url else None,
            http_client=self._http,
            max_network_retries=0,
        )

    async def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Create and confirm a PaymentIntent; ``capture=False`` leaves it ``requires_capture``."""
        result, _status = await self._create(request)
        return result

    async def capture(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Capture ``amount`` of a ``requires_capture`` PaymentIntent."""
        del currency  # a PaymentIntent is captured in its own currency
        return await self._call(
            self._client.v1.payment_intents.capture_async(
                reference, {"amount_to_capture": amount}, {"idempotency_key": idempotency_key}
            ),
            mapping.result_from_payment_intent,
        )

    async def void(self, reference: str, idempotency_key: str) -> GatewayResult:
        """Cancel an uncaptured PaymentIntent, releasing the authorization."""
        return await self._call(
            self._client.v1.payment_intents.cancel_async(reference, None, {"idempotency_key": idempotency_key}),
            mapping.result_from_payment_intent,
        )

    async def refund(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Refund ``amount`` of a succeeded PaymentIntent; the result's reference is the ``re_`` id."""
        del currency  # refunds are in the charge's currency
        return await self._call(
            self._client.v1.refunds.create_async(
                {"payment_intent": reference, "amount": amount}, {"idempotency_key": idempotency_key}
            ),
            mapping.result_from_refund,
        )

    async def lookup(self, request: PaymentRequest) -> GatewayResult:
        """Replay the create under the same Idempotency-Key; Stripe answers with the stored result.

        If nothing was stored, the replay executes the attempt now, which is safe: it is the one
        attempt, charged at most once. A stored 5xx replays as a 5xx, so an unknown replay is
        followed by a search on the attempt id in the PaymentIntent's metadata.
        """
        replay, status = await self._create(request)
        if replay.outcome is Outcome.UNKNOWN and replay.code != _IN_FLIGHT:
            found = await self._search(request.attempt_id)
            if found is not None:
                return found
        return mapping.lookup_result(replay, status)

    async def complete_authentication(
        self, request: PaymentRequest, reference: str, details: Mapping[str, str]
    ) -> GatewayResult:
        """Re-read the PaymentIntent: Stripe finished it when the customer completed the challenge
        (Stripe.js or the redirect), so there is nothing to send but the question."""
        del request, details  # the PaymentIntent is the whole state
        return await self._call(
            self._client.v1.payment_intents.retrieve_async(reference, {"expand": mapping.EXPAND}),
            self._intent_result,
        )

    async def vault(self, token: str, idempotency_key: str) -> VaultResult:
        """Turn a ``tok_`` into a PaymentMethod (or check a ``pm_``) and return its card summary."""
        try:
            if token.startswith("pm_"):
                method = await self._client.v1.payment_methods.retrieve_async(token)
            elif token.startswith("tok_"):
                method = await self._client.v1.payment_methods.create_async(
                    {"type": "card", "card": {"token": token}}, {"idempotency_key": idempotency_key}
                )
            else:
                return VaultResult(
                    Outcome.NOT_SENT, code="unsupported_token", message="expected tok_ or pm_", request_refused=True
                )
        except stripe.StripeError as error:
            failed = mapping.result_from_error(error)
            return VaultResult(
                failed.outcome, code=failed.code, message=failed.message, request_refused=failed.request_refused
            )
        except Exception as error:  # the SDK's own parsing; never past the adapter
            return VaultResult(Outcome.UNKNOWN, code=type(error).__name__, message="unexpected Stripe answer")
        return VaultResult(Outcome.APPROVED, token=method.id, card=mapping.card_summary(method.to_dict()))

    async def verify_credentials(self) -> GatewayResult:
        """Retrieve the account's balance: authenticated, moves no money."""
        try:
            await self._client.v1.balance.retrieve_async()
        except (stripe.AuthenticationError, stripe.PermissionError):
            return GatewayResult(Outcome.NOT_SENT, code="credentials_refused", message="Stripe refused the key")
        except stripe.StripeError as error:
            return mapping.result_from_error(error)
        except Exception as error:  # the SDK's own parsing; never past the adapter
            return GatewayResult(Outcome.UNKNOWN, code=type(error).__name__, message="unexpected Stripe answer")
        return GatewayResult(Outcome.APPROVED, code="verified")

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayNotification:
        """Verify ``Stripe-Signature`` (HMAC and timestamp tolerance) with the SDK's verifier, then decode."""
        if self._webhook_secret is None:
            raise GatewayError(f"gateway {self.name}: no Stripe webhook secret configured")
        signature = next((v for k, v in headers.items() if k.lower() == "stripe-signature"), None)
        try:
            stripe.WebhookSignature.verify_header(
                body, signature, self._webhook_secret.get_secret_value(), self._webhook_tolerance
            )
            return mapping.notification_from_event(mapping.parse_event_body(body))
        except (stripe.SignatureVerificationError, ValueError) as error:
            raise GatewayError(f"unverifiable Stripe webhook: {type(error).__name__}") from error

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # -- internals ---------------------------------------------------------------------------------

    async def _create(self, request: PaymentRequest) -> tuple[GatewayResult, int | None]:
        """The create-and-confirm call, with the HTTP status an error came with (for lookup)."""
        try:
            intent = await self._client.v1.payment_intents.create_async(
                mapping.payment_intent_params(request, self._request_three_d_secure),
                {"idempotency_key": request.attempt_id},
            )
        except stripe.StripeError as error:
            return mapping.result_from_error(error, self.name), error.http_status
        except Exception as error:
            return _unexpected(error), None
        return self._intent_result(intent.to_dict()), 200

    def _intent_result(self, intent: Mapping[str, Any]) -> GatewayResult:
        return mapping.result_from_payment_intent(intent, self.name)

    async def _call(self, call: Any, to_result: Any) -> GatewayResult:
        try:
            answer = await call
        except stripe.StripeError as error:
            return mapping.result_from_error(error, self.name)
        except Exception as error:
            return _unexpected(error)
        result: GatewayResult = to_result(answer.to_dict())
        return result

    async def _search(self, attempt_id: str) -> GatewayResult | None:
        """Find the PaymentIntent carrying ``attempt_id`` in its metadata; None if not (yet) indexed."""
        escaped = attempt_id.replace("\\", "\\\\").replace("'", "\\'")
        try:
            page = await self._client.v1.payment_intents.search_async(
                {
                    "query": f"metadata['attempt_id']:'{escaped}'",
                    "expand": ["data.payment_method", "data.latest_charge"],
                }
            )
        except Exception as error:  # a failed search leaves the attempt unknown, nothing more
            _log.info("stripe search failed: %s", type(error).__name__)
            return None
        intents = [pi.to_dict() for pi in page.data]
        if len(intents) != 1:
            # None: Stripe's search index lags writes, so absence proves nothing. More than one
            # cannot happen under one idempotency key; leave it to an operator.
            return None if not intents else GatewayResult(Outcome.UNKNOWN, code="ambiguous_lookup")
        return self._intent_result(intents[0])


def _unexpected(error: Exception) -> GatewayResult:
    # Not a StripeError: the SDK failed to make sense of an answer. Money may have moved.
    _log.warning("unexpected error from the Stripe SDK: %s", type(error).__name__)
    return GatewayResult(Outcome.UNKNOWN, code=type(error).__name__, message="unexpected answer from Stripe")
