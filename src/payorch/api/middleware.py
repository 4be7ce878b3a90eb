"""Pure ASGI middleware (never cancels a running handler): request ids, security headers, body size
cap, content type, and the hostile-input guard: a header payorch reads once must come once; the body
is read once (capped in size and in time), searched for card numbers and excessive JSON nesting with
the query string, the path and the ``Idempotency-Key`` (``payorch.security.request_scan``), then
replayed to the app as the text the search read. A refused request never reaches a handler, a log
line, the database, the audit trail or the idempotency fingerprint."""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.errors import (
    ApiError,
    CardDataNotAllowed,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from payorch.ids import new_id
from payorch.security.request_scan import Finding, repeated_header, scan_request

log = logging.getLogger(__name__)

GATEWAY_WEBHOOKS_PREFIX = "/v1/gateway_webhooks/"
DASHBOARD_PREFIX = "/dashboard/"
FORM = "application/x-www-form-urlencoded"

SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)


async def send_error(send: Send, error: ApiError, request_id: str, *, close: bool = False) -> None:
    """The error envelope, straight from middleware. ``close`` when the request body was not read to
    its end: the connection cannot carry another request."""
    body = json.dumps(error.body(request_id), separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"request-id", request_id.encode()),
        *SECURITY_HEADERS,
    ]
    if close:
        headers.append((b"connection", b"close"))
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int = 16, body_timeout_seconds: float = 30.0
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = state.get("request_id") or new_id("req")  # set by the outermost layer when mounted
        state["request_id"] = request_id
        guarded = await self._guard(scope, receive, send, request_id)
        if guarded is None:
            return
        scope, downstream = guarded

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Request-Id"] = request_id
                for name, value in SECURITY_HEADERS:
                    response_headers.setdefault(name.decode(), value.decode())
            await send(message)

        await self.app(scope, downstream, send_with_headers)

    async def _guard(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> tuple[Scope, Receive] | None:
        """The request as the app may see it (scope, body), or None once refused here."""
        # The first copy of each header, as Starlette reads it (a single-valued one comes once).
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        refusal = _repeated_header_refusal(scope["headers"]) or self._refusal(scope["method"], headers, scope["path"])
        if refusal is not None:
            await send_error(send, refusal, request_id)
            return None
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if not has_body:
            body = b""
        elif (read := await self._read_body(receive, send, request_id)) is not None:
            body = read
        else:
            return None
        scan = scan_request(
            path=scope["path"],
            query=scope.get("query_string", b""),
            idempotency_key=headers.get("idempotency-key"),
            content_type=headers.get("content-type", ""),
            body=body,
            max_depth=self.max_json_depth,
        )
        gateway = scope["path"].startswith(GATEWAY_WEBHOOKS_PREFIX)
        finding = scan.finding
        if finding is not None and not (gateway and finding.kind == "card_number"):
            # (A gateway's notification is signed by it, not typed by a merchant: an Adyen
            # pspReference is 16 digits, and one in a card range that passes Luhn would be refused,
            # the gateway retrying for days. NUL, lone surrogates, undecodable bodies still are.)
            log.warning("refused %s %s: %s in %s", scope["method"], request_id, finding.kind, finding.param or "body")
            await send_error(send, _refusal_for(finding, self.max_json_depth), request_id)
            return None
        if scan.body is not body and not gateway:
            # The JSON text came in UTF-16/32 or behind a BOM: the app reads the same text in UTF-8.
            body, scope = scan.body, _with_length(scope, len(scan.body))
        return scope, (_replay(body, receive) if has_body else self._limited(receive))

    async def _read_body(self, receive: Receive, send: Send, request_id: str) -> bytes | None:
        """The whole body, or None after answering 413 (too large), 408 (too slow) or a disconnect.
        The deadline covers the body only: the server's header timeout covers what came before."""
        chunks: list[bytes] = []
        received = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    received += len(chunk)
                    if received > self.max_body_bytes:
                        too_large = PayloadTooLarge(f"Request bodies are limited to {self.max_body_bytes} bytes.")
                        await send_error(send, too_large, request_id, close=True)
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            too_slow = RequestTimeout(
                f"The request body was not received within {self.body_timeout_seconds:g} seconds."
            )
            await send_error(send, too_slow, request_id, close=True)
            return None

    def _refusal(self, method: str, headers: dict[str, str], path: str = "") -> ApiError | None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return PayloadTooLarge(f"Request bodies are limited to {self.max_body_bytes} bytes.")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        if method in ("POST", "PUT", "PATCH") and has_body:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            # Gateways post their notifications in their own format (Braintree: a signed form); the
            # dashboard's pages post HTML forms.
            form_allowed = path.startswith((GATEWAY_WEBHOOKS_PREFIX, DASHBOARD_PREFIX)) and media_type == FORM
            if media_type != "application/json" and not form_allowed:
                return UnsupportedMediaType("Request bodies must be JSON (Content-Type: application/json).")
        return None

    def _limited(self, receive: Receive) -> Receive:
        """Count streamed bytes too: a chunked body gets no Content-Length to check up front."""
        received = 0
        limit = self.max_body_bytes

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        return wrapped


def _repeated_header_refusal(raw_headers: list[tuple[bytes, bytes]]) -> ApiError | None:
    name = repeated_header(raw_headers)
    if name is None:
        return None
    return InvalidRequest(f"The {name} header may be sent only once.", param=name, code="header_repeated")


def _with_length(scope: Scope, length: int) -> Scope:
    """``scope`` with its Content-Length (if any) saying ``length``."""
    headers = [(k, str(length).encode() if k.lower() == b"content-length" else v) for k, v in scope["headers"]]
    return {**scope, "headers": headers}


def _replay(body: bytes, receive: Receive) -> Receive:
    """The buffered body as one message; after it, the server's own messages (the disconnect)."""
    pending = True

    async def replayed() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _refusal_for(finding: Finding, max_depth: int) -> ApiError:
    if finding.kind == "too_deep":
        return InvalidRequest(f"JSON bodies may nest at most {max_depth} levels.", code="json_too_deep")
    if finding.kind == "undecodable":
        return InvalidRequest(
            "The request body does not decode as JSON text (UTF-8, UTF-16 or UTF-32).",
            code="invalid_json",
        )
    if finding.kind == "bad_text":
        return InvalidRequest(
            "Text may not hold NUL characters or unpaired UTF-16 surrogates.", param=finding.param, code="invalid_text"
        )
    where = f" ({finding.param})" if finding.param else ""
    return CardDataNotAllowed(
        f"Raw card numbers are not accepted{where}: tokenize the card with the gateway's SDK and send the token.",
        param=finding.param,
    )


class _BodyTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Request bodies are limited to {limit} bytes.")
