"""A merchant's webhook endpoint on loopback: a small HTTP/1.1 server on its own thread and loop.

It records every request that arrives, and can be told to fail the next N requests (503), or to hold
requests (not answer) until ``release()``. A held request whose client goes away (a dispatcher killed
mid-delivery) is recorded as abandoned, never acknowledged. It tracks how many requests carrying one
``webhook-id`` are open at once, so a test can prove no delivery was ever sent twice concurrently.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arrival:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None
    """What it was answered: 200, the injected failure, or None when the client left first."""


@dataclass
class _State:
    arrivals: list[Arrival] = field(default_factory=list)
    fail_remaining: int = 0
    fail_status: int = 503
    holding: bool = False
    hold_seconds: float = 0.0
    open_by_id: dict[str, int] = field(default_factory=dict)
    max_open_same_id: int = 0


class MerchantEndpoint:
    def __init__(self, path: str = "/hooks") -> None:
        self.path = path
        self._state = _State()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> MerchantEndpoint:
        self._thread = threading.Thread(target=self._run, name="merchant-endpoint", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("merchant endpoint did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopped.wait()
        self._server.close()
        self._release.set()
        await self._server.wait_closed()

    # -- behaviour -------------------------------------------------------------------------------

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._state.fail_remaining, self._state.fail_status = count, status

    def hold(self) -> None:
        """Take requests but answer none until ``release()``."""
        with self._lock:
            self._state.holding = True
        assert self._release is not None
        self._release.clear()  # before any request can see ``holding``

    def release(self) -> None:
        with self._lock:
            self._state.holding = False
        assert self._loop is not None
        assert self._release is not None
        self._loop.call_soon_threadsafe(self._release.set)

    def slow(self, seconds: float) -> None:
        """Answer every request after ``seconds`` (widens the window for concurrent duplicates)."""
        with self._lock:
            self._state.hold_seconds = seconds

    # -- what happened ---------------------------------------------------------------------------

    @property
    def arrivals(self) -> list[Arrival]:
        with self._lock:
            return list(self._state.arrivals)

    def acknowledged(self) -> list[Arrival]:
        return [a for a in self.arrivals if a.status is not None and 200 <= a.status < 300]

    @property
    def max_open_same_id(self) -> int:
        with self._lock:
            return self._state.max_open_same_id

    def open_requests(self) -> int:
        with self._lock:
            return sum(self._state.open_by_id.values())

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; arrivals: {self.arrivals}")
            time.sleep(0.02)

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout}s; arrivals: {self.arrivals}")
            await asyncio.sleep(0.02)

    # -- HTTP ------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                headers, body = request
                status = await self._answer(headers, body, reader)
                if status is None:
                    return
                writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\nok".encode())
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(self, headers: dict[str, str], body: bytes, reader: asyncio.StreamReader) -> int | None:
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            state = self._state
            state.open_by_id[webhook_id] = state.open_by_id.get(webhook_id, 0) + 1
            state.max_open_same_id = max(state.max_open_same_id, state.open_by_id[webhook_id])
            holding, delay = state.holding, state.hold_seconds
            if state.fail_remaining > 0:
                state.fail_remaining -= 1
                status: int | None = state.fail_status
            else:
                status = 200
            index = len(state.arrivals)
            state.arrivals.append(Arrival(webhook_id, headers, body, None))
        try:
            if holding:
                status = await self._held(reader, status)
            elif delay:
                await asyncio.sleep(delay)
        finally:
            with self._lock:
                self._state.open_by_id[webhook_id] -= 1
                self._state.arrivals[index] = Arrival(webhook_id, headers, body, status)
        return status

    async def _held(self, reader: asyncio.StreamReader, status: int | None) -> int | None:
        """Wait for release() or for the client to go away (then: no answer, None)."""
        assert self._release is not None
        released = asyncio.ensure_future(self._release.wait())
        gone = asyncio.ensure_future(reader.read(1))
        done, pending = await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if gone in done:
            return None
        return status


async def _read_request(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes] | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return headers, body


def verify(arrival: Arrival, secret: str) -> dict[str, object]:
    """Check the Standard Webhooks signature with the official library; return the decoded payload."""
    from standardwebhooks.webhooks import Webhook

    payload: dict[str, object] = Webhook(secret).verify(arrival.body, arrival.headers)
    return payload
