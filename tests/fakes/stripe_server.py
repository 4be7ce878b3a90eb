"""A protocol-level fake of the Stripe API, plus the small HTTP core the gateway fakes share.

The core (:class:`FakeGatewayServer`) is a hand-written HTTP/1.1 server on 127.0.0.1 running its own
event loop in a background thread. It is hand-written rather than uvicorn because the faults we need
(close the socket after reading a request, hold a request past the client's timeout) live below
ASGI. It implements gateway-style idempotency (same key -> stored answer, key in use -> conflict)
and fault injection; subclasses supply the routes and the gateway's error shapes.

    with StripeFake() as fake:
        fake.inject(Fault.RESET_AFTER_CHARGE)
        ...                     # drive the real SDK at fake.url
        fake.charges_for("att_1")  # the ledger: what really happened
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# ---------------------------------------------------------------------------------------------------
# Shared core
# ---------------------------------------------------------------------------------------------------


class Fault(StrEnum):
    """Misbehaviour a fake can be told to show on a request."""

    HANG = "hang"
    """Never executes and never answers; the socket is held until the client gives up (or release())."""
    RESET_BEFORE_CHARGE = "reset_before_charge"
    """Reads the request, then closes the connection: nothing ran."""
    RESET_AFTER_CHARGE = "reset_after_charge"
    """Executes (and stores the idempotent result), then closes the connection without answering."""
    ERROR_500_AFTER_CHARGE = "error_500_after_charge"
    """Executes, then answers 500."""
    ERROR_503_BEFORE_CHARGE = "error_503_before_charge"
    """Answers 503 without executing (the gateway's own "nothing ran" signal, where it has one)."""
    RATE_LIMITED = "rate_limited"
    """Answers 429 without executing."""
    GARBAGE_AFTER_CHARGE = "garbage_after_charge"
    """Executes, then answers 200 with an HTML body (a proxy in the way)."""
    LATE_SUCCESS = "late_success"
    """Holds the idempotency key in progress until release(), then executes and answers (too late)."""


@dataclass(slots=True)
class FakeRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


@dataclass(slots=True)
class FakeResponse:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> FakeResponse:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass(slots=True)
class LedgerCharge:
    """What the gateway really did for one payment: the truth tests compare outcomes against."""

    reference: str
    amount: int
    currency: str
    status: str
    token: str
    idempotency_key: str | None
    metadata: dict[str, str]
    authorized: bool = False
    amount_captured: int = 0
    amount_refunded: int = 0
    refunds: list[int] = field(default_factory=list)
    decline_code: str | None = None


@dataclass(slots=True)
class _StoredKey:
    fingerprint: str
    response: FakeResponse | None = None
    """None while the first request with this key is still executing."""


_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class FakeGatewayServer:
    """HTTP/1.1 server in a background thread; subclasses implement :meth:`route` and the error shapes."""

    stores_server_errors = False
    """Whether a 500 answered after executing is what an idempotent replay returns (Stripe: yes)."""
    checks_fingerprint = True
    """Whether reusing a key with other parameters is refused (else the first answer is replayed)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._faults: list[Fault] = []
        self._token_faults: dict[str, Fault] = {}
        self._keys: dict[str, _StoredKey] = {}
        self._ledger: dict[str, LedgerCharge] = {}
        self._inflight = 0
        self._requests = 0
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> FakeGatewayServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release, self._stop = asyncio.Event(), asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._serve_connection(reader, writer)
            finally:
                connections.discard(task)
                writer.close()

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            self._release.set()
            for task in list(connections):
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)

    # -- test API -------------------------------------------------------------------------------

    def inject(self, fault: Fault, *, times: int = 1, token: str | None = None) -> None:
        """Show ``fault`` on the next ``times`` requests, or on every request that uses ``token``."""
        with self._cond:
            if token is not None:
                self._token_faults[token] = fault
            else:
                self._faults.extend([fault] * times)

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()
            self._token_faults.clear()

    def release(self) -> None:
        """Let held requests go on: a LATE_SUCCESS executes and answers, a HANG is dropped."""
        loop = self._loop
        assert loop is not None

        def swap() -> None:
            old, self._release = self._release, asyncio.Event()
            assert old is not None
            old.set()

        loop.call_soon_threadsafe(swap)

    @property
    def ledger(self) -> list[LedgerCharge]:
        """A snapshot of every payment the fake has seen, oldest first."""
        with self._cond:
            return copy.deepcopy(list(self._ledger.values()))

    @property
    def request_count(self) -> int:
        with self._cond:
            return self._requests

    def charges_for(self, attempt_id: str) -> list[LedgerCharge]:
        return [c for c in self.ledger if c.metadata.get("attempt_id") == attempt_id]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until ``predicate()`` holds (re-checked whenever a request finishes), or fail."""
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError("condition not met before the deadline")

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        await asyncio.to_thread(self.wait_for, predicate, timeout)

    async def until_idle(self, timeout: float = 10.0) -> None:
        """Wait until no request is being handled (e.g. a HANG noticed its client left)."""
        await self.until(lambda: self._inflight == 0, timeout)

    # -- for subclasses ---------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}fake"

    def record(self, charge: LedgerCharge) -> None:
        with self._cond:
            self._ledger[charge.reference] = charge
            self._cond.notify_all()

    def find(self, reference: str) -> LedgerCharge | None:
        with self._cond:
            return self._ledger.get(reference)

    def token_of(self, request: FakeRequest) -> str | None:
        """The payment token a request uses, for per-token faults."""
        raise NotImplementedError

    def fingerprint(self, request: FakeRequest) -> str:
        return hashlib.sha256(request.method.encode() + request.path.encode() + request.body).hexdigest()

    async def route(self, request: FakeRequest) -> FakeResponse:
        raise NotImplementedError

    def error_response(self, status: int, kind: str) -> FakeResponse:
        """A gateway-shaped error; kind: rate_limited, unavailable, server_error, key_in_use, key_reused."""
        raise NotImplementedError

    def replay_headers(self) -> dict[str, str]:
        return {}

    # -- HTTP ------------------------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            request = await _read_request(reader)
            if request is None:
                return
            with self._cond:
                self._inflight += 1
                self._requests += 1
            try:
                response = await self._dispatch(request, reader)
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._cond.notify_all()
            if response is None:
                return
            with contextlib.suppress(ConnectionError):
                writer.write(_encode_response(response))
                await writer.drain()

    def _take_fault(self, request: FakeRequest) -> Fault | None:
        token = self.token_of(request)
        with self._cond:
            if token is not None and token in self._token_faults:
                return self._token_faults[token]
            return self._faults.pop(0) if self._faults else None

    async def _dispatch(self, request: FakeRequest, reader: asyncio.StreamReader) -> FakeResponse | None:
        fault = self._take_fault(request)
        if fault is Fault.RATE_LIMITED:
            return self.error_response(429, "rate_limited")
        if fault is Fault.ERROR_503_BEFORE_CHARGE:
            return self.error_response(503, "unavailable")
        if fault is Fault.RESET_BEFORE_CHARGE:
            return None
        if fault is Fault.HANG:
            await self._hold_until_client_leaves(reader)
            return None
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key is None:
            return (await self._execute(request, fault))[1]
        with self._cond:
            stored = self._keys.get(key)
            if stored is None:
                self._keys[key] = _StoredKey(self.fingerprint(request))
        if stored is not None:
            return self._replay(stored, request)
        return await self._execute_once(key, request, fault)

    def _replay(self, stored: _StoredKey, request: FakeRequest) -> FakeResponse:
        if self.checks_fingerprint and stored.fingerprint != self.fingerprint(request):
            return self.error_response(400, "key_reused")
        if stored.response is None:
            return self.error_response(409, "key_in_use")
        replayed = copy.copy(stored.response)
        replayed.headers = {**replayed.headers, **self.replay_headers()}
        return replayed

    async def _execute_once(self, key: str, request: FakeRequest, fault: Fault | None) -> FakeResponse | None:
        try:
            result, answer = await self._execute(request, fault)
        except BaseException:
            with self._cond:
                self._keys.pop(key, None)
            raise
        with self._cond:
            if _is_stored(result):
                server_error = fault is Fault.ERROR_500_AFTER_CHARGE and self.stores_server_errors
                self._keys[key].response = answer if server_error else result
            else:
                self._keys.pop(key, None)
            self._cond.notify_all()
        return answer

    async def _execute(self, request: FakeRequest, fault: Fault | None) -> tuple[FakeResponse, FakeResponse | None]:
        """Run the route; answer with what the fault dictates. Returns (real result, what is sent)."""
        if fault is Fault.LATE_SUCCESS:
            assert self._release is not None
            await self._release.wait()
        result = await self.route(request)
        if fault is Fault.RESET_AFTER_CHARGE:
            return result, None
        if fault is Fault.ERROR_500_AFTER_CHARGE:
            return result, self.error_response(500, "server_error")
        if fault is Fault.GARBAGE_AFTER_CHARGE:
            html = b"<html><body>502 Bad Gateway</body></html>"
            return result, FakeResponse(200, html, {"Content-Type": "text/html"})
        return result, result

    async def _hold_until_client_leaves(self, reader: asyncio.StreamReader) -> None:
        assert self._release is not None
        client_left = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(self._release.wait())
        try:
            await asyncio.wait({client_left, released}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            client_left.cancel()
            released.cancel()


def _is_stored(result: FakeResponse) -> bool:
    # Validation failures (400/404 before anything ran) and auth failures are never stored, as with
    # Stripe: only a request whose endpoint began executing keeps its answer for replay.
    return result.status not in (400, 401, 403, 404, 422, 429, 503)


async def _read_request(reader: asyncio.StreamReader) -> FakeRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    try:
        body = await reader.readexactly(length) if length else b""
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    parts = urlsplit(target)
    return FakeRequest(method.upper(), parts.path, dict(parse_qsl(parts.query)), headers, body)


def _encode_response(response: FakeResponse) -> bytes:
    head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}"]
    head += [f"{name}: {value}" for name, value in response.headers.items()]
    head += [f"Content-Length: {len(response.body)}", "Connection: keep-alive", "", ""]
    return "\r\n".join(head).encode("latin-1") + response.body


# ---------------------------------------------------------------------------------------------------
# Stripe
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FakeCard:
    brand: str
    last4: str
    code: str | None = None
    """Stripe's error ``code`` when this card declines (card_declined, expired_card, ...)."""
    decline_code: str | None = None
    three_d_secure: str | None = None
    """``challenge`` (always), ``off_session`` (only when no customer is present), ``frictionless``."""
    country: str = "US"
    """The issuing country Stripe reports as ``card.country``."""


# Stripe's test tokens (tok_<name>) and test payment methods (pm_card_<name>).
# tok_chargeDeclinedTryAgainLater is the fake's own: Stripe has no test token for a soft decline.
STRIPE_TEST_CARDS: dict[str, FakeCard] = {
    "visa": FakeCard("visa", "4242"),
    "mastercard": FakeCard("mastercard", "4444"),
    "fr": FakeCard("visa", "0003", country="FR"),
    "br": FakeCard("visa", "0002", country="BR"),
    "chargeDeclined": FakeCard("visa", "0002", "card_declined", "generic_decline"),
    "chargeDeclinedInsufficientFunds": FakeCard("visa", "9995", "card_declined", "insufficient_funds"),
    "chargeDeclinedLostCard": FakeCard("visa", "9987", "card_declined", "lost_card"),
    "chargeDeclinedStolenCard": FakeCard("visa", "9979", "card_declined", "stolen_card"),
    "chargeDeclinedFraudulent": FakeCard("visa", "0019", "card_declined", "fraudulent"),
    "chargeDeclinedExpiredCard": FakeCard("visa", "0069", "expired_card", "expired_card"),
    "chargeDeclinedIncorrectCvc": FakeCard("visa", "0127", "incorrect_cvc", "incorrect_cvc"),
    "chargeDeclinedProcessingError": FakeCard("visa", "0119", "processing_error", "processing_error"),
    "chargeDeclinedTryAgainLater": FakeCard("visa", "0200", "card_declined", "try_again_later"),
    # 3-D Secure test cards: a challenge every time, one only off session, and a frictionless one.
    "threeDSecure2Required": FakeCard("visa", "3220", three_d_secure="challenge"),
    "threeDSecureRequired": FakeCard("visa", "3063", three_d_secure="challenge"),
    "authenticationRequired": FakeCard("visa", "3184", three_d_secure="challenge"),
    "authenticationRequiredOnSetup": FakeCard("visa", "3155", three_d_secure="off_session"),
    "threeDSecureOptional": FakeCard("visa", "3055", three_d_secure="frictionless"),
}

_EXP_MONTH, _EXP_YEAR = 12, 2034


class StripeFake(FakeGatewayServer):
    """The slice of the Stripe v1 API payorch uses, form-encoded in, Stripe-shaped JSON out."""

    stores_server_errors = True  # Stripe replays the stored answer, 500s included

    def __init__(self, api_key: str = "sk_test_fake") -> None:
        super().__init__()
        self.api_key = api_key
        self._payment_methods: dict[str, FakeCard] = {}
        self._intents: dict[str, dict[str, Any]] = {}
        self._spent: set[str] = set()
        self.before_cancel: Callable[[str], None] | None = None
        """Run before a cancel is processed: a test's customer finishing the challenge meanwhile."""

    def __enter__(self) -> StripeFake:
        self.start()
        return self

    def spend(self, token: str) -> None:
        """Mark a ``tok_`` used, as Stripe does once a token has been attached: using it again is a 400."""
        with self._cond:
            self._spent.add(token)

    # -- protocol --------------------------------------------------------------------------------

    def token_of(self, request: FakeRequest) -> str | None:
        form = dict(parse_qsl(request.body.decode()))
        return form.get("payment_method") or form.get("payment_method_data[card][token]") or form.get("card[token]")

    def replay_headers(self) -> dict[str, str]:
        return {"Idempotent-Replayed": "true"}

    def error_response(self, status: int, kind: str) -> FakeResponse:
        shapes = {
            "rate_limited": (
                "rate_limit_error",
                "rate_limit",
                "Too many requests hit the API too quickly.",
                "true",
            ),
            "unavailable": (
                "api_error",
                None,
                "Stripe is temporarily unavailable; nothing was processed.",
                "true",
            ),
            "server_error": ("api_error", None, "An unknown error occurred.", "false"),
            "key_in_use": (
                "idempotency_error",
                "idempotency_key_in_use",
                "There is currently another in-progress request using this Idempotent Key.",
                "true",
            ),
            "key_reused": (
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters.",
                "false",
            ),
        }
        error_type, code, message, should_retry = shapes[kind]
        return _stripe_error(
            status,
            {"type": error_type, "code": code, "message": message},
            {"Stripe-Should-Retry": should_retry},
        )

    async def route(self, request: FakeRequest) -> FakeResponse:
        parts = request.path.strip("/").split("/")
        if request.method == "POST" and parts[:1] == ["3ds"] and len(parts) == 3:
            # The issuer's challenge page, as the customer's browser would post to it.
            done = self.authenticate(parts[1], succeed=parts[2] == "complete")
            return FakeResponse.json(200 if done else 404, {"authenticated": done})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return _stripe_error(401, {"type": "invalid_request_error", "message": "Invalid API Key provided."})
        form = dict(parse_qsl(request.body.decode())) if request.method == "POST" else dict(request.query)
        parts = request.path.strip("/").split("/")
        with self._cond:
            return self._route_locked(request.method, parts, form, request.headers.get("idempotency-key"))

    def _route_locked(self, method: str, parts: list[str], form: dict[str, str], key: str | None) -> FakeResponse:
        match method, parts:
            case "POST", ["v1", "payment_intents"]:
                return self._create_intent(form, key)
            case "GET", ["v1", "payment_intents", "search"]:
                return self._search(form)
            case "GET", ["v1", "payment_intents", intent_id]:
                return self._with_intent(intent_id, lambda pi: FakeResponse.json(200, self._render(pi, form)))
            case "POST", ["v1", "payment_intents", intent_id, "capture"]:
                return self._with_intent(intent_id, lambda pi: self._capture(pi, form))
            case "POST", ["v1", "payment_intents", intent_id, "cancel"]:
                if self.before_cancel is not None:  # the lock is reentrant: the hook may authenticate
                    self.before_cancel(intent_id)
                return self._with_intent(intent_id, lambda pi: self._cancel(pi, form))
            case "POST", ["v1", "refunds"]:
                return self._with_intent(form.get("payment_intent", ""), lambda pi: self._refund(pi, form))
            case "GET", ["v1", "balance"]:
                return FakeResponse.json(200, {"object": "balance", "available": [], "pending": []})
            case "POST", ["v1", "payment_methods"]:
                return self._create_payment_method(form)
            case "GET", ["v1", "payment_methods", pm_id]:
                card = self._card(pm_id)
                if card is None:
                    return _missing("payment_method", pm_id)
                return FakeResponse.json(200, _payment_method_object(pm_id, card))
        return _stripe_error(404, {"type": "invalid_request_error", "message": "Unrecognized request URL."})

    # -- payment intents -------------------------------------------------------------------------

    def _card(self, token: str) -> FakeCard | None:
        for prefix in ("tok_", "pm_card_"):
            if token.startswith(prefix):
                return STRIPE_TEST_CARDS.get(token.removeprefix(prefix))
        return self._payment_methods.get(token)

    def _create_intent(self, form: dict[str, str], key: str | None) -> FakeResponse:
        param = "payment_method" if form.get("payment_method") else "payment_method_data[card][token]"
        token = form.get(param, "")
        if token in self._spent:
            return _token_already_used(token, param)
        card = self._card(token)
        amount = form.get("amount", "")
        if not amount.isdigit() or int(amount) < 1:
            return _stripe_error(
                400,
                {
                    "type": "invalid_request_error",
                    "param": "amount",
                    "code": "parameter_invalid_integer",
                    "message": "Invalid integer",
                },
            )
        if form.get("currency") == "usd" and int(amount) < 50:
            return _stripe_error(
                400,
                {
                    "type": "invalid_request_error",
                    "param": "amount",
                    "code": "amount_too_small",
                    "message": "Amount must be at least $0.50 usd",
                },
            )
        if card is None:
            return _missing("payment_method" if param == "payment_method" else "token", token, param)
        metadata = {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")}
        pi_id, manual = self.new_id("pi_"), form.get("capture_method") == "manual"
        charge = LedgerCharge(pi_id, int(amount), form.get("currency", ""), "", token, key, metadata)
        intent: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": charge.amount,
            "currency": charge.currency,
            "capture_method": "manual" if manual else "automatic",
            "metadata": metadata,
            "description": form.get("description"),
            "payment_method": self._pm_for(token, card),
            "latest_charge": self.new_id("ch_"),
            "amount_capturable": 0,
            "amount_received": 0,
            "last_payment_error": None,
        }
        self._intents[pi_id] = intent
        if card.code is not None:
            intent["status"] = charge.status = "requires_payment_method"
            charge.decline_code = card.decline_code or card.code
            intent["last_payment_error"] = _card_error_body(card, pi_id)
            self.record(charge)
            error = {**_card_error_body(card, pi_id), "payment_intent": self._render(intent, form)}
            return _stripe_error(402, error)
        intent["client_secret"] = f"{pi_id}_secret_{self.new_id('')}"
        intent["charge_details"] = {"network_transaction_id": f"ntid_{pi_id}", "three_d_secure": None}
        off_session = form.get("off_session") == "true"
        wants = card.three_d_secure == "challenge" or (card.three_d_secure == "off_session" and off_session)
        if form.get("payment_method_options[card][request_three_d_secure]") == "challenge" and card.three_d_secure:
            wants = True
        if wants:
            return self._require_action(intent, charge, form, off_session=off_session)
        if card.three_d_secure is not None:
            intent["charge_details"]["three_d_secure"] = {"result": "authenticated", "version": "2.2.0"}
        self._approve(intent, charge)
        self.record(charge)
        return FakeResponse.json(200, self._render(intent, form))

    def _approve(self, intent: dict[str, Any], charge: LedgerCharge) -> None:
        charge.authorized = True
        intent["next_action"] = None
        if intent["capture_method"] == "manual":
            intent["status"] = charge.status = "requires_capture"
            intent["amount_capturable"] = charge.amount
        else:
            intent["status"] = charge.status = "succeeded"
            intent["amount_received"] = charge.amount_captured = charge.amount

    def _require_action(
        self, intent: dict[str, Any], charge: LedgerCharge, form: dict[str, str], *, off_session: bool
    ) -> FakeResponse:
        """The issuer wants the customer: ``requires_action``, completed by :meth:`authenticate`."""
        intent["status"] = charge.status = "requires_action"
        return_url = form.get("return_url")
        if return_url:
            page = {"url": f"{self.url}/3ds/{intent['id']}/page", "return_url": return_url}
            intent["next_action"] = {"type": "redirect_to_url", "redirect_to_url": page}
        else:
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
        self.record(charge)
        if off_session:
            # As Stripe: the charge fails for now, and the PaymentIntent waits for the customer.
            error = {
                "type": "card_error",
                "code": "authentication_required",
                "decline_code": "authentication_required",
                "message": "Your card was declined. This transaction requires authentication.",
                "payment_intent": self._render(intent, form),
            }
            return _stripe_error(402, error)
        return FakeResponse.json(200, self._render(intent, form))

    def authenticate(self, intent_id: str, *, succeed: bool = True) -> bool:
        """The customer completes (or fails) the challenge of a ``requires_action`` PaymentIntent."""
        with self._cond:
            intent = self._intents.get(intent_id)
            if intent is None or intent["status"] != "requires_action":
                return False
            charge = self._ledger[intent_id]
            secure = {"result": "authenticated" if succeed else "failed", "version": "2.2.0"}
            intent["charge_details"]["three_d_secure"] = secure
            if succeed:
                self._approve(intent, charge)
            else:
                intent.update(status="requires_payment_method", next_action=None)
                charge.status, charge.decline_code = "requires_payment_method", "authentication_failed"
                intent["last_payment_error"] = {
                    "type": "invalid_request_error",
                    "code": "payment_intent_authentication_failure",
                    "message": "The provided PaymentMethod has failed authentication.",
                }
            return True

    def _pm_for(self, token: str, card: FakeCard) -> str:
        if token.startswith("pm_") and not token.startswith("pm_card_"):
            return token
        pm_id = self.new_id("pm_")
        self._payment_methods[pm_id] = card
        return pm_id

    def _render(self, intent: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
        rendered = {k: v for k, v in intent.items() if k != "charge_details"}
        expand = {v for k, v in form.items() if k.startswith("expand")}
        if expand & {"payment_method", "data.payment_method"}:
            pm_id = intent["payment_method"]
            card = self._payment_methods[pm_id]
            rendered["payment_method"] = _payment_method_object(pm_id, card)
        if expand & {"latest_charge", "data.latest_charge"}:
            details = intent.get("charge_details") or {}
            rendered["latest_charge"] = {
                "id": intent["latest_charge"],
                "object": "charge",
                "payment_method_details": {"type": "card", "card": dict(details)},
            }
        return rendered

    def _with_intent(self, intent_id: str, action: Callable[[dict[str, Any]], FakeResponse]) -> FakeResponse:
        intent = self._intents.get(intent_id)
        return _missing("payment_intent", intent_id) if intent is None else action(intent)

    def _capture(self, intent: dict[str, Any], form: dict[str, str]) -> FakeResponse:
        amount = int(form.get("amount_to_capture", intent["amount_capturable"]))
        if intent["status"] != "requires_capture" or amount > intent["amount_capturable"]:
            return _unexpected_state(intent)
        charge = self._ledger[intent["id"]]
        intent.update(status="succeeded", amount_received=amount, amount_capturable=0)
        charge.status, charge.amount_captured = "succeeded", amount
        return FakeResponse.json(200, self._render(intent, form))

    def _cancel(self, intent: dict[str, Any], form: dict[str, str]) -> FakeResponse:
        if intent["status"] in ("succeeded", "canceled"):
            return _unexpected_state(intent)
        intent.update(status="canceled", amount_capturable=0)
        self._ledger[intent["id"]].status = "canceled"
        return FakeResponse.json(200, self._render(intent, form))

    def _refund(self, intent: dict[str, Any], form: dict[str, str]) -> FakeResponse:
        charge = self._ledger[intent["id"]]
        remaining = charge.amount_captured - charge.amount_refunded
        amount = int(form.get("amount", remaining))
        if intent["status"] != "succeeded" or remaining == 0:
            return _stripe_error(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "charge_already_refunded",
                    "message": f"Charge {intent['latest_charge']} has already been refunded.",
                },
            )
        if amount > remaining:
            return _stripe_error(
                400,
                {
                    "type": "invalid_request_error",
                    "param": "amount",
                    "code": "amount_too_large",
                    "message": "Refund amount is too large.",
                },
            )
        charge.amount_refunded += amount
        charge.refunds.append(amount)
        return FakeResponse.json(
            200,
            {
                "id": self.new_id("re_"),
                "object": "refund",
                "amount": amount,
                "currency": charge.currency,
                "payment_intent": intent["id"],
                "charge": intent["latest_charge"],
                "status": "succeeded",
                "metadata": {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")},
            },
        )

    def _search(self, form: dict[str, str]) -> FakeResponse:
        # Only the query payorch sends: metadata['<field>']:'<value>'
        query = form.get("query", "")
        field_name, _, value = query.partition(":")
        name = field_name.removeprefix("metadata['").removesuffix("']")
        wanted = value.strip("'\"")
        found = [self._render(pi, form) for pi in self._intents.values() if pi["metadata"].get(name) == wanted]
        return FakeResponse.json(
            200,
            {
                "object": "search_result",
                "data": found,
                "has_more": False,
                "next_page": None,
                "url": "/v1/payment_intents/search",
            },
        )

    def _create_payment_method(self, form: dict[str, str]) -> FakeResponse:
        token = form.get("card[token]", "")
        if token in self._spent:
            return _token_already_used(token, "card[token]")
        card = self._card(token) if token.startswith("tok_") else None
        if form.get("type") != "card" or card is None:
            return _missing("token", token, "card[token]")
        pm_id = self.new_id("pm_")
        self._payment_methods[pm_id] = card
        return FakeResponse.json(200, _payment_method_object(pm_id, card))


def _stripe_error(status: int, error: dict[str, Any], headers: dict[str, str] | None = None) -> FakeResponse:
    body = {"error": {k: v for k, v in error.items() if v is not None}}
    return FakeResponse.json(status, body, {"Request-Id": "req_fake", **(headers or {})})


def _missing(kind: str, object_id: str, param: str | None = None) -> FakeResponse:
    return _stripe_error(
        400 if kind == "token" else 404,
        {
            "type": "invalid_request_error",
            "code": "resource_missing",
            "param": param,
            "message": f"No such {kind}: '{object_id}'",
        },
    )


def _token_already_used(token: str, param: str) -> FakeResponse:
    return _stripe_error(
        400,
        {
            "type": "invalid_request_error",
            "code": "token_already_used",
            "param": param,
            "message": f"You cannot use a Stripe token more than once: {token}.",
        },
    )


def _unexpected_state(intent: dict[str, Any]) -> FakeResponse:
    return _stripe_error(
        400,
        {
            "type": "invalid_request_error",
            "code": "payment_intent_unexpected_state",
            "message": f"This PaymentIntent's status is {intent['status']}.",
        },
    )


def _card_error_body(card: FakeCard, intent_id: str) -> dict[str, Any]:
    return {
        "type": "card_error",
        "code": card.code,
        "decline_code": card.decline_code,
        "message": "Your card was declined.",
        "charge": intent_id.replace("pi_", "ch_"),
    }


def _payment_method_object(pm_id: str, card: FakeCard) -> dict[str, Any]:
    return {
        "id": pm_id,
        "object": "payment_method",
        "type": "card",
        "customer": None,
        "metadata": {},
        "card": {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": _EXP_MONTH,
            "exp_year": _EXP_YEAR,
            "country": card.country,
            "fingerprint": hashlib.sha256(card.last4.encode()).hexdigest()[:16],
        },
    }
