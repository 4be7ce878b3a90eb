"""Server-side limits against slow and oversized request heads (slowloris), for ``payorch serve``.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but sets no deadline on reading a
request's line and headers: a client that opens a connection and sends one header byte every few
seconds holds a connection, a file descriptor and a buffer forever, and a few thousand such clients
starve the server. ``guarded_http_protocol`` returns uvicorn's httptools protocol with two limits:

- the request line and headers must be complete within ``header_timeout`` seconds of the connection
  opening or of the first byte of the next request on a kept-alive connection; else the server answers
  408 (when no response is in flight) and closes the connection;
- they may take at most ``max_header_bytes`` bytes; more is answered 431 and closed, before httptools
  buffers an endless header in memory.

The body has its own deadline in the ASGI middleware (``RequestContextMiddleware``: 408).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _plain_response(status_line: bytes, text: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status_line + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text
    )


_TIMEOUT_RESPONSE = _plain_response(b"408 Request Timeout", b"Request headers were not received in time.\n")
_TOO_LARGE_RESPONSE = _plain_response(b"431 Request Header Fields Too Large", b"Request headers are too large.\n")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request head."""

    # Set by ``guarded_http_protocol``; a worker process spawned by ``serve --workers N`` imports this
    # class afresh and reads them from its own settings, as it builds its own app.
    header_timeout: float | None = None
    max_header_bytes: int | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.header_timeout is None or self.max_header_bytes is None:
            _load_limits_from_settings()
        self._awaiting_head = True
        self._head_bytes = 0
        self._head_deadline: asyncio.TimerHandle | None = None
        self._parsed_head_bytes = 0
        self._head_refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._awaiting_head:
            super().data_received(data)
            return
        if self._head_deadline is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        self._head_bytes += len(data)
        super().data_received(data)
        # A complete head that was too large; or still no complete head after too many bytes (checked
        # before httptools buffers an endless header; a chunk that completed the head also carried body).
        if self._head_refused or (self._awaiting_head and self._head_bytes > (self.max_header_bytes or 0)):
            self._refuse(_TOO_LARGE_RESPONSE)

    def on_message_begin(self) -> None:
        self._parsed_head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._parsed_head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._parsed_head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = 0
        self._disarm()
        if self._parsed_head_bytes > (self.max_header_bytes or 0):
            self._head_refused = True  # no request cycle: data_received answers 431 and closes
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._head_refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._head_refused:
            return
        super().on_message_complete()
        # What arrives next is the next request's head; its deadline starts with its first byte.
        self._awaiting_head = True
        self._head_bytes = 0

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout or 0, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self._awaiting_head:
            self._refuse(_TIMEOUT_RESPONSE)

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        # Only when no response is being written: a pipelined request must not get bytes mid-response.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(response)
        self.transport.close()


def guarded_http_protocol(*, header_timeout: float, max_header_bytes: int) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.run(http=...)``, with these limits."""
    GuardedHttpToolsProtocol.header_timeout = header_timeout
    GuardedHttpToolsProtocol.max_header_bytes = max_header_bytes
    return GuardedHttpToolsProtocol


def _load_limits_from_settings() -> None:
    from payorch.settings import Settings

    api = Settings().api
    guarded_http_protocol(header_timeout=api.header_timeout_seconds, max_header_bytes=api.max_header_bytes)
