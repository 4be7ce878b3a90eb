"""Pure ASGI middleware (never cancels a running handler): request ids, security headers, body size
cap, content type."""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payorch.errors import ApiError, PayloadTooLarge, UnsupportedMediaType
from payorch.ids import new_id

SECURITY_HEADERS = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
)


async def send_error(send: Send, error: ApiError, request_id: str) -> None:
    body = json.dumps(error.body(request_id), separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"request-id", request_id.encode()),
        *SECURITY_HEADERS,
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is not None:
            await send_error(send, refusal, request_id)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Request-Id"] = request_id
                for name, value in SECURITY_HEADERS:
                    response_headers.setdefault(name.decode(), value.decode())
            await send(message)

        await self.app(scope, self._limited(receive), send_with_headers)

    def _refusal(self, method: str, headers: dict[str, str]) -> ApiError | None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            return PayloadTooLarge(f"Request bodies are limited to {self.max_body_bytes} bytes.")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        if method in ("POST", "PUT", "PATCH") and has_body:
            media_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
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


class _BodyTooLarge(PayloadTooLarge):
    def __init__(self, limit: int) -> None:
        super().__init__(f"Request bodies are limited to {limit} bytes.")
