"""Braintree through its official (synchronous) SDK, run in worker threads under a deadline.

Each adapter builds its own ``BraintreeGateway`` from its own ``Configuration``: the SDK's global
``Configuration.configure`` would make two Braintree accounts in one process step on each other.
Every call runs in ``asyncio.to_thread`` with the SDK's socket timeout set to the gateway timeout and
an asyncio deadline slightly past it, so the SDK's own timeout normally ends the worker thread and the
asyncio one only bounds a request that keeps trickling bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar
from urllib.parse import parse_qs, urlsplit

import certifi

from payorch.gateways.base import (
    GatewayError,
    GatewayNotification,
    GatewayResult,
    Outcome,
    PaymentRequest,
    VaultResult,
)
from payorch.gateways.braintree import mapping
from payorch.gateways.braintree.config import BraintreeConfig
from payorch.money import to_major_string

with warnings.catch_warnings():
    # braintree 4.x warns from its own class bodies while importing (dispute.py), not about any call
    # of ours; under pytest's filterwarnings=error that would fail whoever imports this module first.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"braintree\.")
    import braintree
    from braintree.util.http import Http

logger = logging.getLogger(__name__)

_R = TypeVar("_R")

VAULT_TOKEN_PREFIX: Final = "pv_"  # noqa: S105 - an id prefix, not a secret
"""Payment method tokens vaulted by payorch start with this; any other token is sent as a nonce."""

_CUSTOMER_PREFIX: Final = "pc_"
_THREAD_GRACE_SECONDS: Final = 0.5
_CUSTOMER_ID_IN_USE: Final = "91609"
_TOKEN_IN_USE: Final = frozenset({"91719", "92906", "93503"})
_CANNOT_SUBMIT_FOR_SETTLEMENT: Final = "91507"
_CANNOT_BE_VOIDED: Final = "91504"
_REFUSED_CREDENTIALS: Final = (
    braintree.exceptions.AuthenticationError,
    braintree.exceptions.AuthorizationError,
    braintree.exceptions.NotFoundError,
)


class _ClosableHttp(Http):  # type: ignore[misc]  # braintree is untyped
    """The SDK's HTTP strategy, remembering every per-thread session so ``aclose`` can close them all.

    The SDK keeps one ``requests.Session`` per thread; ``to_thread`` spreads calls over the default
    executor's threads, and the SDK's own ``close`` only reaches the calling thread's session.
    """

    def __init__(self, config: Any, environment: Any = None) -> None:
        super().__init__(config, environment)
        self._sessions: weakref.WeakSet[Any] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()

    def _get_session(self) -> Any:
        session = super()._get_session()
        with self._sessions_lock:
            self._sessions.add(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            sessions = list(self._sessions)
            self._sessions.clear()
        for session in sessions:
            session.close()


def _environment(config: BraintreeConfig) -> Any:
    if config.base_url is None:
        return braintree.Environment.parse_environment(config.environment)
    parts = urlsplit(config.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"gateway {config.name}: base_url must be http(s)://host[:port]")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    # The SDK derives the scheme from the port: https exactly when the port is 443.
    if tls != (port == 443):
        raise ValueError(f"gateway {config.name}: the Braintree SDK speaks https only on port 443")
    return braintree.Environment(config.name, parts.hostname, str(port), "", tls, certifi.where() if tls else None)


def _sdk_configuration(config: BraintreeConfig) -> Any:
    return braintree.Configuration(
        environment=_environment(config),
        merchant_id=config.merchant_account,
        public_key=config.public_key,
        private_key=config.private_key.get_secret_value(),
        timeout=config.timeout,
        http_strategy=_ClosableHttp,
    )


def _key_id(prefix: str, idempotency_key: str) -> str:
    # Braintree ids allow [A-Za-z0-9_-] up to 36 characters; a digest fits any key into that.
    return prefix + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _error_codes(result: Any) -> set[str]:
    return {str(error.code) for error in result.errors.deep_errors}


class BraintreeAdapter:
    """The :class:`~payorch.gateways.base.Gateway` for Braintree."""

    def __init__(self, config: BraintreeConfig) -> None:
        self.name = config.name
        self._timeout = config.timeout
        self._three_d_secure_required = config.three_d_secure_required
        sdk_config = _sdk_configuration(config)
        self._http: _ClosableHttp = sdk_config.http_strategy()
        self._gateway = braintree.BraintreeGateway(sdk_config)

    async def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Sell (``capture=True``) or authorize ``request.amount``; ``order_id`` is the attempt id."""
        source = "payment_method_token" if request.token.startswith(VAULT_TOKEN_PREFIX) else "payment_method_nonce"
        params: dict[str, Any] = {
            "amount": to_major_string(request.amount, request.currency),
            "order_id": request.attempt_id,
            source: request.token,
            "options": {"submit_for_settlement": request.capture},
        }
        presence = request.presence
        if self._three_d_secure_required and not presence.off_session:
            # The nonce must carry a 3-D Secure result from the client SDK, or Braintree rejects it.
            params["options"]["three_d_secure"] = {"required": True}
        if presence.off_session:
            params["transaction_source"] = "unscheduled"
            if presence.network_transaction_id:
                params["external_vault"] = {
                    "status": "vaulted",
                    "previous_network_transaction_id": presence.network_transaction_id,
                }
        elif presence.setup_future_usage:
            params["external_vault"] = {"status": "will_vault"}
        return await self._run("sale", lambda: self._gateway.transaction.sale(params), mapping.sdk_result)

    async def complete_authentication(
        self, request: PaymentRequest, reference: str, details: Mapping[str, str]
    ) -> GatewayResult:
        """Braintree's 3-D Secure happens in its client SDK before the nonce exists, so a sale never
        waits for a customer: where a payment stands is what a lookup finds."""
        del reference, details
        return await self.lookup(request)

    async def capture(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Submit ``amount`` (up to the authorized amount) of ``reference`` for settlement.

        Braintree takes no idempotency key here; a replayed capture is refused as already submitted,
        and is then confirmed by reading the transaction back.
        """
        del idempotency_key  # resolved by state instead, see above
        major = to_major_string(amount, currency)

        def submit() -> GatewayResult:
            result = mapping.capture_result(self._gateway.transaction.submit_for_settlement(reference, major))
            return self._confirm(result, _CANNOT_SUBMIT_FOR_SETTLEMENT, reference, captured=True)

        return await self._run("capture", submit, _identity)

    async def void(self, reference: str, idempotency_key: str) -> GatewayResult:
        """Void an authorization (or an unsettled sale); a replayed void is confirmed by reading it back."""
        del idempotency_key  # Braintree voids carry no key; resolved by state like capture

        def void() -> GatewayResult:
            result = mapping.void_result(self._gateway.transaction.void(reference))
            return self._confirm(result, _CANNOT_BE_VOIDED, reference, captured=False)

        return await self._run("void", void, _identity)

    async def refund(self, reference: str, amount: int, currency: str, idempotency_key: str) -> GatewayResult:
        """Refund ``amount`` of a settled (or settling) sale; the refund carries the key as its order id.

        Braintree refuses to refund a sale that has not settled yet (code 91506): cancel it instead.
        """
        params = {"amount": to_major_string(amount, currency), "order_id": idempotency_key}
        return await self._run(
            "refund", lambda: self._gateway.transaction.refund(reference, params), mapping.refund_result
        )

    async def lookup(self, request: PaymentRequest) -> GatewayResult:
        """Search Braintree by order id (the attempt id): found -> its state, none -> ``NOT_SENT``.

        A search that fails proves nothing about the attempt, so any failure here is ``UNKNOWN``.
        """
        search = braintree.TransactionSearch.order_id == request.attempt_id
        return await self._run(
            "lookup",
            # The collection fetches lazily: it must be drained inside the worker thread.
            lambda: list(self._gateway.transaction.search(search).items),
            mapping.lookup_result,
            failure=Outcome.UNKNOWN,
        )

    async def vault(self, token: str, idempotency_key: str) -> VaultResult:
        """Store the nonce ``token`` as a verified card on a customer made for it; return its reusable token.

        The customer id and the token are derived from ``idempotency_key``, so a replay finds the
        card stored by the first call instead of storing a second one. The key must therefore be
        unique across payorch's merchants (the ``pm_`` id is): equal keys share one vaulted card.
        """
        customer_id = _key_id(_CUSTOMER_PREFIX, idempotency_key)
        vault_token = _key_id(VAULT_TOKEN_PREFIX, idempotency_key)
        try:
            async with asyncio.timeout(2 * self._timeout + _THREAD_GRACE_SECONDS):
                return await asyncio.to_thread(self._vault_in_thread, token, customer_id, vault_token)
        except Exception as exc:
            outcome, code = mapping.failure_outcome(exc)
            self._log_failure("vault", outcome, exc)
            return VaultResult(outcome, code=code, message=type(exc).__name__)

    def _vault_in_thread(self, nonce: str, customer_id: str, vault_token: str) -> VaultResult:
        created = self._gateway.customer.create({"id": customer_id})
        if created is None:
            return VaultResult(Outcome.UNKNOWN, code="malformed_response", message="no customer in answer")
        replay = not created.is_success and _CUSTOMER_ID_IN_USE in _error_codes(created)
        if not created.is_success and not replay:
            return mapping.vault_result(created)
        result = self._gateway.payment_method.create(
            {
                "customer_id": customer_id,
                "payment_method_nonce": nonce,
                "token": vault_token,
                "options": {"verify_card": True},
            }
        )
        # On a replay the nonce is spent or the token taken: the card the first call stored is the answer.
        if result is not None and not result.is_success and (replay or _error_codes(result) & _TOKEN_IN_USE):
            stored = self._find_vaulted(vault_token)
            if stored is not None:
                return stored
        return mapping.vault_result(result)

    def _find_vaulted(self, vault_token: str) -> VaultResult | None:
        try:
            card = self._gateway.payment_method.find(vault_token)
        except braintree.exceptions.NotFoundError:
            return None
        return VaultResult(Outcome.APPROVED, token=str(card.token), card=mapping.card_summary(card))

    async def verify_credentials(self) -> GatewayResult:
        """Generate a client token (``POST /merchants/<id>/client_token``): authenticated by the key
        pair, scoped to the merchant id, moves no money."""

        def generate() -> GatewayResult:
            try:
                self._gateway.client_token.generate()
            except _REFUSED_CREDENTIALS:
                # 401: the key pair; 403 or 404: keys that do not reach this merchant id.
                return GatewayResult(Outcome.NOT_SENT, code="credentials_refused", message="Braintree refused the keys")
            return GatewayResult(Outcome.APPROVED, code="verified")

        return await self._run("verify", generate, _identity)

    async def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayNotification:
        """Verify ``bt_signature`` over ``bt_payload`` (form-encoded body) and decode the notification."""
        del headers  # Braintree signs the payload alone
        try:
            fields = parse_qs(body.decode("ascii"), strict_parsing=True)
            signature, payload = fields["bt_signature"][0], fields["bt_payload"][0]
        except (UnicodeDecodeError, ValueError, KeyError) as exc:
            raise GatewayError("not a Braintree notification: bt_signature and bt_payload expected") from exc
        try:
            parsed = self._gateway.webhook_notification.parse(signature, payload)
            return mapping.notification(parsed, payload)
        except Exception as exc:
            raise GatewayError(f"unverifiable Braintree notification: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Close every connection the SDK's sessions hold."""
        self._http.close()

    def _confirm(self, result: GatewayResult, refusal_code: str, reference: str, *, captured: bool) -> GatewayResult:
        # Runs in the worker thread. "Cannot capture/void in this state" may answer our own replay of
        # a capture or void whose first answer was lost: read the transaction to tell.
        if result.outcome is not Outcome.HARD_DECLINE or result.code != refusal_code:
            return result
        transaction = self._gateway.transaction.find(reference)
        status = str(transaction.status)
        done = status in mapping.CAPTURED_STATUSES if captured else status == "voided"
        if done:
            return GatewayResult(Outcome.APPROVED, str(transaction.id), status, captured=captured)
        return result

    async def _run(
        self,
        operation: str,
        call: Callable[[], Any],
        to_result: Callable[[Any], GatewayResult],
        failure: Outcome | None = None,
    ) -> GatewayResult:
        """Run ``call`` in a worker thread under the deadline; any failure becomes an outcome.

        ``failure`` overrides the classification where a failure proves nothing (lookup).
        """
        try:
            async with asyncio.timeout(self._timeout + _THREAD_GRACE_SECONDS):
                answer = await asyncio.to_thread(call)
            return to_result(answer)
        except Exception as exc:
            outcome, code = mapping.failure_outcome(exc)
            outcome = failure or outcome
            self._log_failure(operation, outcome, exc)
            return GatewayResult(outcome, code=code, message=f"{operation} failed: {type(exc).__name__}")

    def _log_failure(self, operation: str, outcome: Outcome, exc: Exception) -> None:
        logger.warning(
            "braintree call failed",
            extra={
                "gateway": self.name,
                "operation": operation,
                "outcome": str(outcome),
                "error": type(exc).__name__,
            },
        )


def _identity(result: _R) -> _R:
    return result
