"""Limits and headers: body size and JSON depth caps, slow clients cut off by the served process,
``Cache-Control: no-store`` and ``nosniff`` on API responses, CORS closed unless configured."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import make_settings
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.integration.served_payorch import Served, read_until_closed, serve

from payorch.app import create_app
from payorch.runtime import Runtime

ORIGIN = "https://shop.example"


@pytest.fixture(scope="module")
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


def assert_api_headers(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store", response.request.url
    assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    assert response.headers["request-id"].startswith("req_")


async def test_every_kind_of_api_response_carries_the_headers(
    client: httpx.AsyncClient, merchant: MerchantFixture
) -> None:
    created = await client.post("/v1/charges", json=charge_body(), headers=merchant.headers)
    assert created.status_code == 201
    responses = [
        created,
        await client.get(f"/v1/charges/{created.json()['id']}", headers=merchant.headers),
        await client.get("/v1/charges", headers=merchant.headers),
        await client.post("/v1/charges", json=charge_body("tok_chargeDeclined"), headers=merchant.headers),
        await client.get("/v1/charges"),
        await client.get("/v1/charges/ch_nothing", headers=merchant.headers),
        await client.get("/v1/nothing"),
        await client.post("/v1/charges", content=b"x", headers={**merchant.headers, "Content-Type": "text/plain"}),
        await client.post("/v1/charges", json=charge_body(description="4242424242424242"), headers=merchant.headers),
        await client.get("/healthz"),
    ]
    assert [r.status_code for r in responses] == [201, 200, 200, 402, 401, 404, 404, 415, 400, 200]
    for response in responses:
        assert_api_headers(response)


async def test_cors_is_closed_by_default(client: httpx.AsyncClient, merchant: MerchantFixture) -> None:
    preflight = await client.options(
        "/v1/charges",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code in (400, 404, 405)
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    simple = await client.get("/v1/charges", headers={**merchant.headers, "Origin": ORIGIN})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers


@pytest.fixture(scope="module")
async def cors_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, api={"api_key_cache_seconds": 0, "cors_allowed_origins": [ORIGIN]})
    built = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=built))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
        yield http
    await built.aclose()


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }


async def test_configured_origins_only(cors_client: httpx.AsyncClient, runtime: Runtime) -> None:
    allowed = await cors_client.options("/v1/charges", headers=_preflight(ORIGIN))
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    unknown = await cors_client.options("/v1/charges", headers=_preflight("https://evil.example"))
    assert unknown.status_code == 400
    assert "access-control-allow-origin" not in unknown.headers

    fresh = await create_merchant(runtime)
    simple = await cors_client.get("/v1/charges", headers={**fresh.headers, "Origin": ORIGIN})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    assert "request-id" in simple.headers["access-control-expose-headers"].lower()
    assert_api_headers(simple)
    other = await cors_client.get("/v1/charges", headers={**fresh.headers, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


# --- the served process: raw sockets, bounded in time -------------------------------------------

HEADER_TIMEOUT = 1.5
BODY_TIMEOUT = 1.5
KEEP_ALIVE = 1
# Generous: the server must act within its timeout, but a loaded test machine may be slow to notice.
BOUND = 20.0


@pytest.fixture(scope="module")
def served(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {
        "PAYORCH_API__HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "PAYORCH_API__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "PAYORCH_API__KEEP_ALIVE_SECONDS": str(KEEP_ALIVE),
        "PAYORCH_API__MAX_HEADER_BYTES": "8192",
    }
    with serve(database_url, tmp_path_factory.mktemp("served-limits"), env) as process:
        yield process


def _connect(served: Served) -> socket.socket:
    return socket.create_connection(("127.0.0.1", served.port), timeout=5)


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def _envelope(data: bytes) -> dict[str, str]:
    body = data.split(b"\r\n\r\n", 1)[1]
    error: dict[str, str] = json.loads(body)["error"]
    return error


def test_slowloris_headers_are_cut_off(served: Served) -> None:
    """Headers sent one byte at a time, forever: the server answers 408 and closes."""
    drip = b"GET /healthz HTTP/1.1\r\nHost: payorch\r\n" + b"X-Padding: " + b"a" * 10_000
    deadline = time.monotonic() + BOUND
    with _connect(served) as sock:
        closed = False
        received = b""
        for byte in drip:
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            more, closed = read_until_closed(sock, time.monotonic() + 0.2)
            received += more
            if closed or time.monotonic() > deadline:
                break
        if not closed:
            more, closed = read_until_closed(sock, deadline)
            received += more
    assert closed, "the server kept a slowloris connection open"
    assert received == b"" or _status(received) == 408, received
    # Meanwhile the server is alive and well.
    assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200


def test_a_silent_connection_is_closed(served: Served) -> None:
    with _connect(served) as sock:
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 408


def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: payorch\r\n\r\n")
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 200  # answered, then closed once idle; no second response


def test_a_slow_body_gets_408(served: Served) -> None:
    with _connect(served) as sock:
        sock.sendall(
            b"POST /v1/charges HTTP/1.1\r\nHost: payorch\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"amount": 1'
        )
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 408, data
    assert _envelope(data)["code"] == "request_timeout"


def test_oversized_header_block_gets_431(served: Served) -> None:
    with _connect(served) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: payorch\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n")
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 431


def test_a_big_body_after_small_headers_is_not_a_big_header(served: Served) -> None:
    body = json.dumps({"description": "z" * 30_000}).encode()
    with _connect(served) as sock:
        sock.sendall(
            b"POST /v1/charges HTTP/1.1\r\nHost: payorch\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 401  # no key: the body was read whole and the request went on


def test_oversized_chunked_body_gets_413(served: Served) -> None:
    with _connect(served) as sock:
        sock.sendall(
            b"POST /v1/charges HTTP/1.1\r\nHost: payorch\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(80):
                sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_closed(sock, time.monotonic() + BOUND)
    assert closed
    assert _status(data) == 413, data
    assert _envelope(data)["code"] == "payload_too_large"


def test_oversized_declared_body_gets_413(served: Served, tmp_path: Path) -> None:
    response = httpx.post(
        f"{served.url}/v1/charges",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert_api_headers(response)


def test_served_responses_carry_the_headers(served: Served) -> None:
    for response in (
        httpx.get(f"{served.url}/v1/charges", timeout=5),
        httpx.get(f"{served.url}/healthz", timeout=5),
    ):
        assert_api_headers(response)
        assert "server" not in response.headers
