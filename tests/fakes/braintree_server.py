"""A protocol-level fake of Braintree's XML gateway API, driven by the real ``braintree`` SDK.

A starlette app served by uvicorn on 127.0.0.1 (random port) in a background thread. It speaks the
wire format the SDK sends and expects: XML bodies (underscored tags in, dashed tags with ``type``
attributes out), HTTP basic auth with the public/private key pair, gzip when asked, 201/200 for
success and 422 ``api-error-response`` for validation errors and declines.

It reacts to Braintree's sandbox test values: ``fake-valid-nonce`` (and the brand variants) approve,
``fake-processor-declined-*-nonce`` decline with 2000, ``fake-gateway-rejected-fraud-nonce`` is a
fraud rejection, amounts from 2000.00 to 2999.99 decline with that processor code and 3000.xx fails
with 3000. A few nonces are payorch's own, in the same style, for rejections the sandbox drives by
CVV/AVS values instead (``fake-gateway-rejected-{cvv,avs,duplicate,risk-threshold}-nonce``).

Faults are injected per next request (optionally per operation) or per nonce. Closing a connection
"after reading the request" lives below ASGI, so the uvicorn protocol is subclassed only to remember
each connection's transport, which the app then aborts with a TCP reset.

    with BraintreeFake() as fake:
        fake.inject(Fault.RESET_AFTER_CHARGE)
        ...                                   # drive the SDK at fake.url
        fake.transactions_for("att_1")        # the ledger: what really happened
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import gzip
import hashlib
import hmac
import json
import secrets
import socket
import struct
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

# ---------------------------------------------------------------------------------------------------
# Faults and ledger
# ---------------------------------------------------------------------------------------------------


class Fault(StrEnum):
    """Misbehaviour the fake shows on a request (same names as the Stripe fake's)."""

    HANG = "hang"
    """Never processes, never answers; holds the socket until the client gives up."""
    RESET_BEFORE_CHARGE = "reset_before_charge"
    """Reads the request, then resets the connection: nothing ran."""
    RESET_AFTER_CHARGE = "reset_after_charge"
    """Processes the request, then resets the connection without answering."""
    ERROR_500_AFTER_CHARGE = "error_500_after_charge"
    """Processes, then answers 500."""
    ERROR_503_BEFORE_CHARGE = "error_503_before_charge"
    """Answers 503 without processing."""
    RATE_LIMITED = "rate_limited"
    """Answers 429 without processing."""
    GARBAGE_AFTER_CHARGE = "garbage_after_charge"
    """Processes, then answers 201 with truncated, unparsable XML."""
    MISSING_FIELDS_AFTER_CHARGE = "missing_fields_after_charge"
    """Processes, then answers a transaction with no amount and no status."""
    LATE_SUCCESS = "late_success"
    """Holds the request until the client gives up, then processes it: a success nobody heard of."""


_BEFORE = frozenset({Fault.ERROR_503_BEFORE_CHARGE, Fault.RATE_LIMITED})
_AFTER = frozenset(
    {
        Fault.RESET_AFTER_CHARGE,
        Fault.ERROR_500_AFTER_CHARGE,
        Fault.GARBAGE_AFTER_CHARGE,
        Fault.MISSING_FIELDS_AFTER_CHARGE,
    }
)


@dataclass(slots=True)
class Card:
    card_type: str
    bin: str
    last_4: str
    expiration_month: str = "12"
    expiration_year: str = "2030"
    country_of_issuance: str = "USA"
    """ISO 3166-1 alpha-3, as Braintree reports it (``Unknown`` when it does not know)."""


@dataclass(slots=True)
class Transaction:
    """One transaction as Braintree holds it: the truth tests compare outcomes against."""

    id: str
    type: str
    """``sale`` or ``credit`` (a refund)."""
    amount: Decimal
    status: str
    order_id: str | None
    card: Card
    processor_response_code: str = "1000"
    processor_response_text: str = "Approved"
    gateway_rejection_reason: str | None = None
    authorized_amount: Decimal = Decimal(0)
    refund_ids: list[str] = field(default_factory=list)
    refunded_transaction_id: str | None = None
    payment_method_token: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    three_d_secure: dict[str, Any] | None = None
    """The ``three_d_secure_info`` the nonce carried from the client's 3-D Secure."""
    network_transaction_id: str | None = None

    @property
    def holds_money(self) -> bool:
        return self.status in _HOLDS_MONEY


_HOLDS_MONEY = frozenset({"authorized", "submitted_for_settlement", "settling", "settled"})


@dataclass(slots=True)
class _InjectedFault:
    fault: Fault
    nonce: str | None
    operation: str | None
    remaining: int


# ---------------------------------------------------------------------------------------------------
# Test values (https://developer.paypal.com/braintree/docs/reference/general/testing)
# ---------------------------------------------------------------------------------------------------

_VISA = Card("Visa", "411111", "1111")
_NONCE_CARDS = {
    "fake-valid-nonce": _VISA,
    "fake-valid-visa-nonce": _VISA,
    "fake-valid-mastercard-nonce": Card("MasterCard", "555555", "4444"),
    "fake-valid-amex-nonce": Card("American Express", "378282", "0005"),
    "fake-valid-discover-nonce": Card("Discover", "601111", "1117"),
    "fake-valid-country-of-issuance-cad-nonce": Card("Visa", "400000", "0002", country_of_issuance="CAN"),
    "fake-valid-unknown-indicators-nonce": Card("Visa", "400000", "0010", country_of_issuance="Unknown"),
    "fake-processor-declined-visa-nonce": Card("Visa", "400011", "1115"),
    "fake-processor-declined-mastercard-nonce": Card("MasterCard", "510510", "5100"),
    "fake-processor-failure-visa-nonce": Card("Visa", "400011", "1115"),
    "fake-gateway-rejected-fraud-nonce": Card("Visa", "400011", "1511"),
    "fake-gateway-rejected-cvv-nonce": _VISA,
    "fake-gateway-rejected-avs-nonce": _VISA,
    "fake-gateway-rejected-duplicate-nonce": _VISA,
    "fake-gateway-rejected-risk-threshold-nonce": _VISA,
    "fake-three-d-secure-visa-full-authentication-nonce": _VISA,
    "fake-three-d-secure-visa-failed-authentication-nonce": _VISA,
}
# Nonces whose client-side 3-D Secure left a result on them (Braintree's 3-D Secure test nonces).
_NONCE_THREE_D_SECURE = {
    "fake-three-d-secure-visa-full-authentication-nonce": {
        "status": "authenticate_successful",
        "liability_shifted": True,
        "liability_shift_possible": True,
        "enrolled": "Y",
        "three_d_secure_version": "2.2.0",
    },
    "fake-three-d-secure-visa-failed-authentication-nonce": {
        "status": "authenticate_failed",
        "liability_shifted": False,
        "liability_shift_possible": True,
        "enrolled": "Y",
        "three_d_secure_version": "2.2.0",
    },
}
_NONCE_DECLINES = {
    "fake-processor-declined-visa-nonce": "2000",
    "fake-processor-declined-mastercard-nonce": "2000",
    "fake-processor-failure-visa-nonce": "3000",
}
_NONCE_REJECTIONS = {
    "fake-gateway-rejected-fraud-nonce": "fraud",
    "fake-gateway-rejected-cvv-nonce": "cvv",
    "fake-gateway-rejected-avs-nonce": "avs",
    "fake-gateway-rejected-duplicate-nonce": "duplicate",
    "fake-gateway-rejected-risk-threshold-nonce": "risk_threshold",
}
_CONSUMED_NONCE = "fake-consumed-nonce"
_RESPONSE_TEXTS = {
    "1000": "Approved",
    "2000": "Do Not Honor",
    "2001": "Insufficient Funds",
    "2004": "Expired Card",
    "2010": "Card Issuer Declined CVV",
    "2014": "Processor Declined - Fraud Suspected",
    "2038": "Processor Declined",
    "2046": "Declined",
    "3000": "Processor Network Unavailable - Try Again",
}


def _decline_for_amount(amount: Decimal) -> str | None:
    # Sandbox: 2000.00-2999.99 decline with the amount as code; 3000.xx is a processor failure.
    if Decimal(2000) <= amount < Decimal(3001):
        return str(min(int(amount), 3000))
    return None


# ---------------------------------------------------------------------------------------------------
# XML wire format
# ---------------------------------------------------------------------------------------------------


def _parse(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    root = ET.fromstring(body)  # noqa: S314 - parses only our own test client's requests
    return {root.tag.replace("-", "_"): _node(root)}


def _node(element: ET.Element) -> Any:
    if element.get("type") == "array":
        return [_node(child) for child in element]
    if len(element):
        return {child.tag.replace("-", "_"): _node(child) for child in element}
    return element.text or ""


def _element(tag: str, value: Any) -> ET.Element:
    """Python values -> Braintree's XML: dashed tags, typed scalars, ``(tag, value)`` list items."""
    element = ET.Element(tag.replace("_", "-"))
    if value is None:
        element.set("nil", "true")
    elif isinstance(value, bool):
        element.set("type", "boolean")
        element.text = str(value).lower()
    elif isinstance(value, int):
        element.set("type", "integer")
        element.text = str(value)
    elif isinstance(value, datetime):
        element.set("type", "datetime")
        element.text = value.strftime("%Y-%m-%dT%H:%M:%SZ")
    elif isinstance(value, list):
        element.set("type", "array")
        for item in value:
            child_tag, child_value = item if isinstance(item, tuple) else ("item", item)
            element.append(_element(child_tag, child_value))
    elif isinstance(value, dict):
        for key, child in value.items():
            element.append(_element(key, child))
    else:
        element.text = str(value)
    return element


def _xml(element: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(element)


def _card_xml(card: Card, token: str | None, customer_id: str | None = None) -> dict[str, Any]:
    return {
        "token": token,
        "bin": card.bin,
        "last_4": card.last_4,
        "card_type": card.card_type,
        "expiration_month": card.expiration_month,
        "expiration_year": card.expiration_year,
        "country_of_issuance": card.country_of_issuance,
        "customer_id": customer_id,
        "customer_location": "US",
        "default": True,
        "expired": False,
    }


def _validation_error(scope: str, code: str, attribute: str, message: str) -> dict[str, Any]:
    error = {"code": code, "attribute": attribute, "message": message}
    return {
        "errors": {"errors": [], scope: {"errors": [("error", error)]}},
        "message": message,
    }


# ---------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------


class _Reply:
    """What a handler decided: status and a root element, or an empty 404."""

    def __init__(self, status: int, element: ET.Element | None = None) -> None:
        self.status = status
        self.element = element


class _NoResponse(Response):
    """Answer nothing: the connection was reset or the client is gone."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ARG002 - ASGI signature
        return None


def _tracking_protocol(transports: dict[tuple[str, int], asyncio.Transport]) -> type[H11Protocol]:
    class TrackingH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            if peer:
                transports[(peer[0], peer[1])] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client:
                transports.pop((self.client[0], self.client[1]), None)
            super().connection_lost(exc)

    return TrackingH11Protocol


class BraintreeFake:
    """Braintree's gateway API for one merchant, with a ledger and fault injection."""

    def __init__(
        self,
        merchant_id: str = "payorch_merchant",
        public_key: str = "fake_public_key",
        private_key: str = "fake_private_key",
        currency: str = "USD",
    ) -> None:
        self.merchant_id = merchant_id
        self.public_key = public_key
        self.private_key = private_key
        self.currency = currency
        self._lock = threading.Lock()
        self._transactions: dict[str, Transaction] = {}
        self._customers: dict[str, list[str]] = {}
        self._vault: dict[str, tuple[Card, str]] = {}
        self._faults: list[_InjectedFault] = []
        self._requests: list[tuple[str, str]] = []
        self._refused: list[str] = []
        self._in_flight = 0
        self._transports: dict[tuple[str, int], asyncio.Transport] = {}
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> BraintreeFake:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # accept from now on: connections queue until uvicorn takes over
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            http=_tracking_protocol(self._transports),
            lifespan="on",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="braintree-fake", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the Braintree fake did not start")

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)  # releases held requests
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = None

    def _app(self) -> Starlette:
        @contextlib.asynccontextmanager
        async def lifespan(_: Starlette) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            self._ready.set()
            yield

        base = "/merchants/{merchant_id}"
        routes = [
            Route(base + "/transactions", self._endpoint("sale", self._sale), methods=["POST"]),
            Route(
                base + "/transactions/advanced_search_ids",
                self._endpoint("search_ids", self._search_ids),
                methods=["POST"],
            ),
            Route(
                base + "/transactions/advanced_search",
                self._endpoint("search", self._search),
                methods=["POST"],
            ),
            Route(base + "/transactions/{id}", self._endpoint("find", self._find), methods=["GET"]),
            Route(
                base + "/transactions/{id}/submit_for_settlement",
                self._endpoint("submit_for_settlement", self._submit_for_settlement),
                methods=["PUT"],
            ),
            Route(base + "/transactions/{id}/void", self._endpoint("void", self._void), methods=["PUT"]),
            Route(base + "/transactions/{id}/refund", self._endpoint("refund", self._refund), methods=["POST"]),
            Route(
                base + "/customers",
                self._endpoint("customer_create", self._create_customer),
                methods=["POST"],
            ),
            Route(
                base + "/payment_methods",
                self._endpoint("payment_method_create", self._create_payment_method),
                methods=["POST"],
            ),
            Route(
                base + "/payment_methods/any/{id}",
                self._endpoint("payment_method_find", self._find_payment_method),
                methods=["GET"],
            ),
            Route(
                base + "/client_token",
                self._endpoint("client_token", self._client_token),
                methods=["POST"],
            ),
        ]
        return Starlette(routes=routes, lifespan=lifespan)

    # -- test API ---------------------------------------------------------------------------------

    def inject(self, fault: Fault, *, times: int = 1, nonce: str | None = None, operation: str | None = None) -> None:
        """Misbehave on the next ``times`` matching requests: any, one operation's, or one nonce's sales."""
        with self._lock:
            self._faults.append(_InjectedFault(fault, nonce, operation, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def ledger(self) -> list[Transaction]:
        """A snapshot of every transaction, oldest first."""
        with self._lock:
            return [copy.deepcopy(t) for t in self._transactions.values()]

    def transactions_for(self, order_id: str) -> list[Transaction]:
        return [t for t in self.ledger if t.order_id == order_id]

    def transaction(self, transaction_id: str) -> Transaction:
        with self._lock:
            return copy.deepcopy(self._transactions[transaction_id])

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(operation, nonce or transaction id) of every authenticated request, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def refused_requests(self) -> list[str]:
        """The operation of every request refused for its credentials (keys or merchant id)."""
        with self._lock:
            return list(self._refused)

    def settle(self, transaction_id: str) -> None:
        """Settle a submitted sale, as the sandbox's ``testing.settle`` does."""
        with self._lock:
            transaction = self._transactions[transaction_id]
            if transaction.status != "submitted_for_settlement":
                raise ValueError(f"cannot settle a {transaction.status} transaction")
            transaction.status = "settled"

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (without blocking the event loop) until ``predicate()`` holds, or fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met before the deadline")
            await asyncio.sleep(0.01)

    async def until_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled (held ones included)."""
        await self.until(lambda: self._in_flight == 0, timeout)

    def webhook(self, kind: str, transaction_id: str, *, private_key: str | None = None) -> bytes:
        """A form-encoded notification about a ledger transaction, signed as Braintree signs them."""
        with self._lock:
            subject = self._transaction_xml(self._transactions[transaction_id])
        notification = _element(
            "notification",
            {"timestamp": datetime.now(UTC), "kind": kind, "subject": {"transaction": subject}},
        )
        payload = base64.encodebytes(_xml(notification))
        key = hashlib.sha1((private_key or self.private_key).encode()).digest()  # noqa: S324 - Braintree's scheme
        signature = hmac.new(key, payload, hashlib.sha1).hexdigest()
        return urlencode({"bt_signature": f"{self.public_key}|{signature}", "bt_payload": payload}).encode()

    # -- request handling -------------------------------------------------------------------------

    def _endpoint(
        self, operation: str, handler: Callable[[dict[str, Any], dict[str, str]], _Reply]
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            self._in_flight += 1
            try:
                return await self._serve(request, operation, handler)
            finally:
                self._in_flight -= 1

        return endpoint

    async def _serve(
        self, request: Request, operation: str, handler: Callable[[dict[str, Any], dict[str, str]], _Reply]
    ) -> Response:
        body = await request.body()
        if not self._authorized(request) or request.path_params["merchant_id"] != self.merchant_id:
            with self._lock:
                self._refused.append(operation)
            return Response(status_code=401 if not self._authorized(request) else 404)
        params = _parse(body)
        nonce = _nonce_of(params)
        with self._lock:
            self._requests.append((operation, nonce or request.path_params.get("id", "")))
        fault = self._take_fault(operation, nonce)
        if fault in _BEFORE:
            return Response(status_code=503 if fault is Fault.ERROR_503_BEFORE_CHARGE else 429)
        if fault in (Fault.HANG, Fault.RESET_BEFORE_CHARGE, Fault.LATE_SUCCESS):
            await self._drop(request, reset=fault is Fault.RESET_BEFORE_CHARGE)
            if fault is Fault.LATE_SUCCESS:
                self._handle(handler, params, request.path_params)
            return _NoResponse()
        reply = self._handle(handler, params, request.path_params)
        if fault is Fault.RESET_AFTER_CHARGE:
            await self._drop(request, reset=True)
            return _NoResponse()
        if fault is Fault.ERROR_500_AFTER_CHARGE:
            return Response(b"Internal Server Error", status_code=500)
        if fault is Fault.GARBAGE_AFTER_CHARGE:
            return self._respond(request, 201, b'<?xml version="1.0"?>\n<transaction><id>')
        if fault is Fault.MISSING_FIELDS_AFTER_CHARGE and reply.element is not None:
            reply = _Reply(reply.status, _element(reply.element.tag, {"id": _id_of(reply.element)}))
        if reply.element is None:
            return Response(status_code=reply.status)
        return self._respond(request, reply.status, _xml(reply.element))

    def _handle(
        self,
        handler: Callable[[dict[str, Any], dict[str, str]], _Reply],
        params: dict[str, Any],
        path: dict[str, str],
    ) -> _Reply:
        with self._lock:
            return handler(params, path)

    def _authorized(self, request: Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.public_key}:{self.private_key}".encode()).decode()
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), expected.encode()) and bool(request.headers.get("x-apiversion"))

    def _respond(self, request: Request, status: int, body: bytes) -> Response:
        headers = {"content-type": "application/xml; charset=utf-8"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body)
            headers["content-encoding"] = "gzip"
        return Response(body, status_code=status, headers=headers)

    def _take_fault(self, operation: str, nonce: str | None) -> Fault | None:
        with self._lock:
            for injected in self._faults:
                if injected.nonce is not None and injected.nonce != nonce:
                    continue
                if injected.operation is not None and injected.operation != operation:
                    continue
                injected.remaining -= 1
                if injected.remaining <= 0:
                    self._faults.remove(injected)
                return injected.fault
        return None

    async def _drop(self, request: Request, *, reset: bool) -> None:
        """Reset the connection now (``reset``) or hold it; return once the client is gone."""
        client = request.client
        transport = self._transports.get((client.host, client.port)) if client else None
        if reset and transport is not None:
            sock = transport.get_extra_info("socket")
            # SO_LINGER 0: close with a RST, as a crashed load balancer would.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        disconnected = asyncio.ensure_future(_until_disconnect(request))
        stopping = asyncio.ensure_future(self._stopping.wait())
        _, pending = await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if transport is not None and not transport.is_closing():
            transport.abort()

    # -- Braintree operations (called with the lock held) -----------------------------------------

    def _new_id(self) -> str:
        return secrets.token_hex(4)

    def _sale(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        fields = params.get("transaction", {})
        try:
            amount = Decimal(fields.get("amount", ""))
        except InvalidOperation:
            return self._error("transaction", "81503", "amount", "Amount is an invalid format.")
        if amount <= 0:
            return self._error("transaction", "81531", "amount", "Amount must be greater than zero.")
        nonce = fields.get("payment_method_nonce")
        token = fields.get("payment_method_token")
        if token is not None:
            if token not in self._vault:
                return self._error("transaction", "91518", "payment_method_token", "Payment method token is invalid.")
            card, nonce = self._vault[token]
        elif nonce == _CONSUMED_NONCE:
            return self._error(
                "transaction",
                "91564",
                "payment_method_nonce",
                "Cannot use a payment_method_nonce more than once.",
            )
        elif nonce not in _NONCE_CARDS:
            return self._error(
                "transaction", "91565", "payment_method_nonce", "Unknown or expired payment_method_nonce."
            )
        else:
            card = _NONCE_CARDS[nonce]
        capture = fields.get("options", {}).get("submit_for_settlement") == "true"
        transaction = Transaction(
            id=self._new_id(),
            type="sale",
            amount=amount,
            authorized_amount=amount,
            status="submitted_for_settlement" if capture else "authorized",
            order_id=fields.get("order_id"),
            card=card,
            payment_method_token=token,
            three_d_secure=_NONCE_THREE_D_SECURE.get(nonce or ""),
            network_transaction_id=f"{self._new_id()}{self._new_id()}",
        )
        self._decide(transaction, nonce)
        required = fields.get("options", {}).get("three_d_secure", {}).get("required") == "true"
        authenticated = (transaction.three_d_secure or {}).get("liability_shifted") is True
        if required and not authenticated and transaction.status in ("authorized", "submitted_for_settlement"):
            transaction.status, transaction.gateway_rejection_reason = "gateway_rejected", "three_d_secure"
        self._transactions[transaction.id] = transaction
        if transaction.holds_money:
            return _Reply(201, _element("transaction", self._transaction_xml(transaction)))
        return self._declined(transaction)

    def _decide(self, transaction: Transaction, nonce: str | None) -> None:
        reason = _NONCE_REJECTIONS.get(nonce or "")
        if reason is not None:
            transaction.status = "gateway_rejected"
            transaction.gateway_rejection_reason = reason
            transaction.processor_response_code = ""
            transaction.processor_response_text = "Unknown ()"
            return
        code = _NONCE_DECLINES.get(nonce or "") or _decline_for_amount(transaction.amount)
        if code is not None:
            transaction.status = "failed" if code == "3000" else "processor_declined"
            transaction.processor_response_code = code
            transaction.processor_response_text = _RESPONSE_TEXTS.get(code, "Declined")

    def _declined(self, transaction: Transaction) -> _Reply:
        message = (
            f"Gateway Rejected: {transaction.gateway_rejection_reason}"
            if transaction.status == "gateway_rejected"
            else transaction.processor_response_text
        )
        response = {
            "errors": {"errors": []},
            "message": message,
            "transaction": self._transaction_xml(transaction),
        }
        return _Reply(422, _element("api_error_response", response))

    def _find(self, _: dict[str, Any], path: dict[str, str]) -> _Reply:
        transaction = self._transactions.get(path["id"])
        if transaction is None:
            return _Reply(404)
        return _Reply(200, _element("transaction", self._transaction_xml(transaction)))

    def _submit_for_settlement(self, params: dict[str, Any], path: dict[str, str]) -> _Reply:
        transaction = self._transactions.get(path["id"])
        if transaction is None:
            return _Reply(404)
        if transaction.status != "authorized":
            return self._error(
                "transaction",
                "91507",
                "base",
                f"Cannot submit for settlement unless status is authorized. ({transaction.status})",
            )
        raw_amount = params.get("transaction", {}).get("amount") or transaction.amount
        amount = Decimal(raw_amount)
        if amount > transaction.authorized_amount:
            return self._error("transaction", "91522", "amount", "Settlement amount is too large.")
        transaction.amount = amount
        transaction.status = "submitted_for_settlement"
        return _Reply(200, _element("transaction", self._transaction_xml(transaction)))

    def _void(self, _: dict[str, Any], path: dict[str, str]) -> _Reply:
        transaction = self._transactions.get(path["id"])
        if transaction is None:
            return _Reply(404)
        if transaction.status not in ("authorized", "submitted_for_settlement"):
            return self._error(
                "transaction", "91504", "base", "Transaction can only be voided if status is authorized."
            )
        transaction.status = "voided"
        return _Reply(200, _element("transaction", self._transaction_xml(transaction)))

    def _refund(self, params: dict[str, Any], path: dict[str, str]) -> _Reply:
        sale = self._transactions.get(path["id"])
        if sale is None:
            return _Reply(404)
        if sale.status not in ("settled", "settling"):
            return self._error("transaction", "91506", "base", "Cannot refund transaction unless it is settled.")
        remaining = sale.amount - sum(self._transactions[r].amount for r in sale.refund_ids)
        if remaining <= 0:
            return self._error("transaction", "91512", "base", "Transaction has already been completely refunded.")
        fields = params.get("transaction", {})
        amount = Decimal(fields.get("amount") or remaining)
        if amount > remaining:
            return self._error("transaction", "91521", "amount", "Refund amount is too large.")
        refund = Transaction(
            id=self._new_id(),
            type="credit",
            amount=amount,
            status="submitted_for_settlement",
            order_id=fields.get("order_id"),
            card=sale.card,
            refunded_transaction_id=sale.id,
        )
        self._transactions[refund.id] = refund
        sale.refund_ids.append(refund.id)
        return _Reply(201, _element("transaction", self._transaction_xml(refund)))

    def _matching(self, criteria: dict[str, Any]) -> list[Transaction]:
        order_id = criteria.get("order_id", {}).get("is")
        ids = criteria.get("ids")
        return [
            t
            for t in self._transactions.values()
            if (order_id is None or t.order_id == order_id) and (ids is None or t.id in ids)
        ]

    def _search_ids(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        ids = [t.id for t in self._matching(params.get("search", {}))]
        return _Reply(200, _element("search_results", {"page_size": 50, "ids": ids}))

    def _search(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        found = self._matching(params.get("search", {}))
        collection = _element(
            "credit_card_transactions", {"current_page_number": 1, "page_size": 50, "total_items": len(found)}
        )
        collection.set("type", "collection")
        for transaction in found:
            collection.append(_element("transaction", self._transaction_xml(transaction)))
        return _Reply(200, collection)

    def _create_customer(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        customer_id = params.get("customer", {}).get("id") or self._new_id()
        if customer_id in self._customers:
            return self._error("customer", "91609", "id", "Customer ID has already been taken.")
        self._customers[customer_id] = []
        return _Reply(201, self._customer_xml(customer_id))

    def _create_payment_method(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        fields = params.get("payment_method", {})
        customer_id = fields.get("customer_id")
        nonce = fields.get("payment_method_nonce")
        token = fields.get("token") or self._new_id()
        if customer_id not in self._customers:
            return self._error("payment_method", "93105", "customer_id", "Customer ID is invalid.")
        if nonce == _CONSUMED_NONCE:
            return self._error(
                "payment_method",
                "93107",
                "payment_method_nonce",
                "Cannot use a payment_method_nonce more than once.",
            )
        if nonce not in _NONCE_CARDS or nonce in _NONCE_DECLINES or nonce in _NONCE_REJECTIONS:
            return self._failed_verification(nonce)
        if token in self._vault:
            return self._error("credit_card", "91719", "token", "Payment method token is already in use.")
        self._vault[token] = (_NONCE_CARDS[nonce], nonce)
        self._customers[customer_id].append(token)
        return _Reply(201, _element("credit_card", _card_xml(_NONCE_CARDS[nonce], token, customer_id)))

    def _failed_verification(self, nonce: str | None) -> _Reply:
        if nonce not in _NONCE_CARDS:
            return self._error(
                "payment_method", "93108", "payment_method_nonce", "Unknown or expired payment_method_nonce."
            )
        code = _NONCE_DECLINES.get(nonce, "")
        reason = _NONCE_REJECTIONS.get(nonce)
        verification = {
            "id": self._new_id(),
            "status": "gateway_rejected" if reason else "processor_declined",
            "gateway_rejection_reason": reason,
            "processor_response_code": code,
            "processor_response_text": _RESPONSE_TEXTS.get(code, "Unknown ()"),
            "credit_card": _card_xml(_NONCE_CARDS[nonce], None),
        }
        response = {
            "errors": {"errors": []},
            "message": "Credit card verification failed",
            "verification": verification,
        }
        return _Reply(422, _element("api_error_response", response))

    def _find_payment_method(self, _: dict[str, Any], path: dict[str, str]) -> _Reply:
        stored = self._vault.get(path["id"])
        if stored is None:
            return _Reply(404)
        owner = next((c for c, tokens in self._customers.items() if path["id"] in tokens), None)
        return _Reply(200, _element("credit_card", _card_xml(stored[0], path["id"], owner)))

    def _client_token(self, params: dict[str, Any], _: dict[str, str]) -> _Reply:
        """A client token, as Braintree's: base64 of the JSON a frontend SDK reads (version 2)."""
        version = params.get("client_token", {}).get("version", "2")
        fingerprint = secrets.token_hex(32)
        token = {
            "version": int(version),
            "authorizationFingerprint": f"{fingerprint}?created_at={int(time.time())}",
            "configUrl": f"{self.url}/merchants/{self.merchant_id}/client_api/v1/configuration",
            "merchantId": self.merchant_id,
            "environment": "sandbox",
        }
        value = base64.b64encode(json.dumps(token).encode()).decode()
        return _Reply(201, _element("client_token", {"value": value}))

    # -- XML shapes -------------------------------------------------------------------------------

    def _error(self, scope: str, code: str, attribute: str, message: str) -> _Reply:
        return _Reply(422, _element("api_error_response", _validation_error(scope, code, attribute, message)))

    def _customer_xml(self, customer_id: str) -> ET.Element:
        cards = [("credit_card", _card_xml(self._vault[t][0], t, customer_id)) for t in self._customers[customer_id]]
        return _element(
            "customer",
            {
                "id": customer_id,
                "merchant_id": self.merchant_id,
                "created_at": datetime.now(UTC),
                "credit_cards": cards,
            },
        )

    def _transaction_xml(self, transaction: Transaction) -> dict[str, Any]:
        return {
            "id": transaction.id,
            "status": transaction.status,
            "type": transaction.type,
            "currency_iso_code": self.currency,
            "amount": str(transaction.amount),
            "merchant_account_id": self.merchant_id,
            "order_id": transaction.order_id,
            "created_at": transaction.created_at,
            "updated_at": datetime.now(UTC),
            "processor_response_code": transaction.processor_response_code,
            "processor_response_text": transaction.processor_response_text,
            "gateway_rejection_reason": transaction.gateway_rejection_reason,
            "payment_instrument_type": "credit_card",
            "credit_card": _card_xml(transaction.card, transaction.payment_method_token),
            "refund_ids": list(transaction.refund_ids),
            "refunded_transaction_id": transaction.refunded_transaction_id,
            "disputes": [],
            "status_history": [],
            "three_d_secure_info": transaction.three_d_secure,
            "network_transaction_id": transaction.network_transaction_id,
        }


def _nonce_of(params: dict[str, Any]) -> str | None:
    for scope in ("transaction", "payment_method"):
        fields = params.get(scope)
        if isinstance(fields, dict) and fields.get("payment_method_nonce"):
            return str(fields["payment_method_nonce"])
    return None


def _id_of(element: ET.Element) -> str:
    found = element.find("id")
    return found.text or "" if found is not None else ""


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
