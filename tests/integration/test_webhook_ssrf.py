"""Server-side request forgery: which webhook URLs are taken, and what the dispatcher connects to.

Real sockets on loopback; names are answered by a test resolver handed to the dispatcher and the
endpoint service through their constructors (``tests/fakes/resolver.py``), never by patching.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from tests.conftest import own_app
from tests.factories import MerchantFixture, charge_body, create_merchant, post_charge
from tests.fakes.resolver import StaticResolver
from tests.fakes.tls import CertificateAuthority
from tests.integration.served_payorch import free_port

from payorch.runtime import Runtime
from payorch.security.api_keys import Caller
from payorch.webhooks.dispatcher import CONNECTION_FAILED, Dispatcher
from payorch.webhooks.schemas import WebhookEndpointCreate
from payorch.webhooks.service import WebhookService
from payorch.webhooks.urls import Resolver

ENDPOINTS = "/v1/webhook_endpoints"
HOST = "hooks.merchant.example"  # .example never resolves on a real DNS: only the test resolver knows it
WEBHOOKS = {"secret_key": Fernet.generate_key().decode(), "delivery_timeout_seconds": 2}

REFUSED_IN_EVERY_MODE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/computeMetadata/v1/",
    "http://10.0.0.5/hooks",
    "http://172.16.3.4/hooks",
    "http://192.168.1.1/hooks",
    "http://100.64.0.1/hooks",  # CGNAT
    "http://127.0.0.1:8080/hooks",
    "http://localhost:8080/hooks",
    "http://[::1]/hooks",
    "http://0.0.0.0/hooks",
    "http://[::]/hooks",
    "http://224.0.0.251/hooks",
    "http://240.0.0.1/hooks",
    "http://192.0.2.10/hooks",  # documentation range
    "http://[::ffff:169.254.169.254]/hooks",  # IPv4-mapped
    "http://[::ffff:7f00:1]/hooks",
    "http://[::10.0.0.5]/hooks",  # IPv4-compatible
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/",  # ... as hex
    "http://0x7f.1/",
    "http://017700000001/",  # 127.0.0.1 in octal
    "http://127.1/",
    "http://0251.0376.0251.0376/",  # octal dotted
    "http://localhost./hooks",
    "http://metadata.google.internal./hooks",
    "http://ｌｏｃａｌｈｏｓｔ/hooks",  # full-width: IDNA would map it to localhost
    "http://１２７.０.０.１/hooks",
    "http://127。0。0。1/hooks",  # ideographic full stops
    "http://%31%32%37.0.0.1/hooks",
    "http://[fe80::1%25eth0]/hooks",
    "http://[2002:a9fe:a9fe::1]/hooks",  # 6to4 around 169.254.169.254
    "http://[2002:0a00:0005::]/hooks",  # 6to4 around 10.0.0.5
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffa]/hooks",  # Teredo, client 10.0.0.5
    "http://[64:ff9b::a9fe:a9fe]/hooks",  # NAT64 around 169.254.169.254
    "http://[64:ff9b::7f00:1]/hooks",
    "http://[64:ff9b:1::a00:5]/hooks",  # local-use NAT64
    "http://168.63.129.16/hooks",  # Azure's wire server
    "http://printer.local/hooks",
    "http://db.corp/hooks",
]


def _https(url: str) -> str:
    return "https://" + url.removeprefix("http://")


@pytest.mark.parametrize("url", REFUSED_IN_EVERY_MODE)
async def test_internal_addresses_and_their_disguises_are_refused_in_test_and_live_mode(
    client: httpx.AsyncClient, runtime: Runtime, url: str
) -> None:
    merchant = await create_merchant(runtime)
    for headers, candidate in ((merchant.headers, url), (merchant.live_headers, _https(url))):
        response = await client.post(ENDPOINTS, json={"url": candidate, "enabled_events": ["*"]}, headers=headers)
        assert response.status_code == 400, (candidate, response.text)
        assert response.json()["error"]["param"] == "url"
        assert response.json()["error"]["code"] == "url_invalid"


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hooks",
        "https://[2002:5db8:d822::1]/hooks",  # 6to4 around 93.184.216.34
        "https://[64:ff9b::5db8:d822]/hooks",  # NAT64 around 93.184.216.34
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hooks",
    ],
)
async def test_public_addresses_and_wrapped_public_ones_are_taken(
    client: httpx.AsyncClient, runtime: Runtime, url: str
) -> None:
    merchant = await create_merchant(runtime)
    response = await client.post(ENDPOINTS, json={"url": url, "enabled_events": ["*"]}, headers=merchant.live_headers)
    assert response.status_code == 201, response.text


def _service(runtime: Runtime, resolver: Resolver, **webhooks: Any) -> WebhookService:
    config = runtime.settings.webhooks.model_copy(update=webhooks)
    return WebhookService(runtime.db, config, runtime.webhooks.dispatcher._box, resolver=resolver)


def _caller(merchant: MerchantFixture, *, livemode: bool = False) -> Caller:
    return Caller(merchant_id=merchant.id, key_id=merchant.key_id, livemode=livemode)


@pytest.mark.parametrize(
    "answers",
    [["10.0.0.7"], ["93.184.216.34", "169.254.169.254"], ["fd00:ec2::254"], ["::ffff:127.0.0.1"], []],
)
async def test_a_name_is_refused_when_any_of_its_addresses_is_internal(runtime: Runtime, answers: list[str]) -> None:
    from payorch.errors import InvalidRequest

    merchant = await create_merchant(runtime)
    service = _service(runtime, StaticResolver({HOST: answers}))
    for livemode in (False, True):
        params = WebhookEndpointCreate(url=f"https://{HOST}/hooks", enabled_events=["*"])
        with pytest.raises(InvalidRequest) as refused:
            await service.create(_caller(merchant, livemode=livemode), params)
        assert refused.value.param == "url"


async def test_a_name_that_does_not_resolve_says_the_same_as_a_private_one(runtime: Runtime) -> None:
    """Otherwise the answer would tell a caller which internal names payorch's resolver knows."""
    from payorch.errors import InvalidRequest

    merchant = await create_merchant(runtime)
    service = _service(runtime, StaticResolver({"private.merchant.example": ["10.1.2.3"]}))
    messages = set()
    for host in ("private.merchant.example", "unknown.merchant.example"):
        params = WebhookEndpointCreate(url=f"https://{host}/hooks", enabled_events=["*"])
        with pytest.raises(InvalidRequest) as refused:
            await service.create(_caller(merchant), params)
        messages.add(refused.value.message)
    assert len(messages) == 1


async def test_loopback_needs_the_development_setting_and_production_refuses_it(runtime: Runtime) -> None:
    from payorch.errors import InvalidRequest
    from payorch.settings import Settings

    merchant = await create_merchant(runtime)
    resolver = StaticResolver({HOST: ["127.0.0.1"]})
    params = WebhookEndpointCreate(url=f"http://{HOST}:8080/hooks", enabled_events=["*"])
    with pytest.raises(InvalidRequest):
        await _service(runtime, resolver).create(_caller(merchant), params)
    endpoint, _ = await _service(runtime, resolver, allow_loopback_endpoints=True).create(_caller(merchant), params)
    assert endpoint.url == params.url
    private = WebhookEndpointCreate(url="http://10.0.0.1/hooks", enabled_events=["*"])
    with pytest.raises(InvalidRequest):  # loopback only: a private network stays refused
        await _service(runtime, resolver, allow_loopback_endpoints=True).create(_caller(merchant), private)
    with pytest.raises(ValueError, match="ALLOW_LOOPBACK_ENDPOINTS"):
        Settings(
            environment="production",
            database_url="postgresql+asyncpg://u@db/p",
            webhooks={"secret_key": WEBHOOKS["secret_key"], "allow_loopback_endpoints": True},
        )


# -- at connect time ------------------------------------------------------------------------------


@dataclass
class Listener:
    """A TCP server on loopback that does what ``answer`` says with each connection."""

    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ssl: Any = None
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def listening(listener: Listener) -> AsyncIterator[Listener]:
    server = await asyncio.start_server(listener._handle, "127.0.0.1", 0, ssl=listener.ssl)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)


def http_answer(status: int, listener_box: list[Listener], extra: str = "") -> Any:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        await reader.readexactly(length)
        listener_box[0].requests.append(head)
        writer.write(f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\n{extra}\r\n".encode())
        await writer.drain()

    return answer


def http_listener(status: int = 200, extra: str = "", ssl: Any = None) -> Listener:
    box: list[Listener] = []
    listener = Listener(http_answer(status, box, extra), ssl=ssl)
    box.append(listener)
    return listener


def loopback_runtime(database_url: str, **webhooks: Any) -> contextlib.AbstractAsyncContextManager[Any]:
    return own_app(database_url, webhooks={**WEBHOOKS, **webhooks})


async def deliver_one(
    runtime: Runtime,
    client: httpx.AsyncClient,
    url: str,
    *,
    create_with: Resolver,
    send_with: Resolver,
    ssl_context: Any = None,
) -> dict[str, Any]:
    """Register ``url`` (names answered by ``create_with``), make one event, send it with a dispatcher
    whose names are answered by ``send_with``; return the delivery as the API lists it."""
    merchant = await create_merchant(runtime)
    endpoint, _ = await _service(runtime, create_with).create(
        _caller(merchant), WebhookEndpointCreate(url=url, enabled_events=["charge.succeeded"])
    )
    assert (await post_charge(client, merchant, charge_body())).status_code == 201
    dispatcher = Dispatcher(
        runtime.db,
        runtime.settings.webhooks,
        runtime.webhooks.dispatcher._box,
        resolver=send_with,
        ssl_context=ssl_context,
    )
    listing = f"{ENDPOINTS}/{endpoint.id}/deliveries"
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        await dispatcher.run_once()
        deliveries = (await client.get(listing, headers=merchant.headers)).json()["data"]
        if deliveries and deliveries[0]["attempts"] >= 1:
            delivery: dict[str, Any] = deliveries[0]
            return delivery
        assert asyncio.get_running_loop().time() < deadline, "the delivery was never attempted"


async def test_a_name_that_turns_private_after_creation_is_not_called(database_url: str) -> None:
    async with loopback_runtime(database_url) as (runtime, client), listening(http_listener()) as merchant_side:
        url = f"http://{HOST}:{merchant_side.port}/hooks"
        public, rebound = StaticResolver({HOST: ["93.184.216.34"]}), StaticResolver({HOST: ["127.0.0.1"]})
        delivery = await deliver_one(runtime, client, url, create_with=public, send_with=rebound)
    assert merchant_side.connections == 0
    assert delivery["status"] == "pending"
    assert delivery["last_error"] == CONNECTION_FAILED
    assert delivery["last_status_code"] is None


async def test_every_address_is_checked_not_only_the_first(database_url: str) -> None:
    async with (
        loopback_runtime(database_url, allow_loopback_endpoints=True) as (runtime, client),
        listening(http_listener()) as merchant_side,
    ):
        url = f"http://{HOST}:{merchant_side.port}/hooks"
        first_fine = StaticResolver({HOST: ["127.0.0.1", "10.0.0.7"]})
        delivery = await deliver_one(
            runtime, client, url, create_with=StaticResolver({HOST: ["127.0.0.1"]}), send_with=first_fine
        )
    assert merchant_side.connections == 0
    assert delivery["last_error"] == CONNECTION_FAILED


async def test_the_checked_address_is_the_one_connected_with_the_name_in_host(database_url: str) -> None:
    async with (
        loopback_runtime(database_url, allow_loopback_endpoints=True) as (runtime, client),
        listening(http_listener()) as merchant_side,
    ):
        url = f"http://{HOST}:{merchant_side.port}/hooks"
        resolver = StaticResolver({HOST: ["127.0.0.1"]})
        delivery = await deliver_one(
            runtime, client, url, create_with=StaticResolver(resolver.answers), send_with=resolver
        )
    # The system's DNS cannot resolve HOST: the request arrived because the checked address was used.
    assert delivery["status"] == "succeeded", delivery
    assert resolver.questions == [HOST]  # one resolution for the one connection
    (head,) = merchant_side.requests
    assert f"host: {HOST}:{merchant_side.port}".encode() in head.lower()


async def test_tls_is_verified_for_the_name_not_the_address(database_url: str, tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    seen_sni: list[str | None] = []
    right = authority.server_context(HOST)
    right.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment]
    resolver = StaticResolver({HOST: ["127.0.0.1"]})
    async with (
        loopback_runtime(database_url, allow_loopback_endpoints=True) as (runtime, client),
        listening(http_listener(ssl=right)) as good,
        listening(http_listener(ssl=authority.server_context("someone-else.example"))) as wrong,
    ):
        ok = await deliver_one(
            runtime, client, f"https://{HOST}:{good.port}/hooks",
            create_with=resolver, send_with=resolver, ssl_context=authority.client_context(),
        )  # fmt: skip
        refused = await deliver_one(
            runtime, client, f"https://{HOST}:{wrong.port}/hooks",
            create_with=resolver, send_with=resolver, ssl_context=authority.client_context(),
        )  # fmt: skip
    assert ok["status"] == "succeeded", ok
    assert seen_sni == [HOST]
    assert refused["last_error"] == CONNECTION_FAILED
    assert wrong.requests == []


async def test_redirects_are_never_followed(database_url: str) -> None:
    async with (
        loopback_runtime(database_url, allow_loopback_endpoints=True) as (runtime, client),
        listening(http_listener()) as target,
    ):
        async with listening(http_listener(307, f"location: http://127.0.0.1:{target.port}/elsewhere\r\n")) as hop:
            resolver = StaticResolver({})
            delivery = await deliver_one(
                runtime, client, f"http://127.0.0.1:{hop.port}/hooks", create_with=resolver, send_with=resolver
            )
    assert len(hop.requests) == 1
    assert target.connections == 0
    assert delivery["last_status_code"] == 307
    assert delivery["last_error"] == "HTTP 307"


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # accepts, never answers: what a filtered or hung port looks like after the timeout


async def _ssh(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"SSH-2.0-OpenSSH_9.6 Debian\r\n")
    await writer.drain()
    await reader.read(100)


async def _reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(10)
    writer.transport.abort()


async def test_the_recorded_error_does_not_tell_an_open_port_from_a_closed_one(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="payorch.webhooks.dispatcher")
    resolver = StaticResolver({})
    recorded: dict[str, tuple[Any, Any, Any]] = {}
    async with (
        loopback_runtime(database_url, allow_loopback_endpoints=True, delivery_timeout_seconds=1) as (runtime, client),
        listening(Listener(_silent)) as silent,
        listening(Listener(_ssh)) as ssh,
        listening(Listener(_reset)) as reset,
        listening(http_listener()) as plain_http,
    ):
        targets = {
            "closed": f"http://127.0.0.1:{free_port()}/hooks",
            "silent": f"http://127.0.0.1:{silent.port}/hooks",
            "another protocol": f"http://127.0.0.1:{ssh.port}/hooks",
            "reset": f"http://127.0.0.1:{reset.port}/hooks",
            "tls to a plain port": f"https://127.0.0.1:{plain_http.port}/hooks",
        }
        for name, url in targets.items():
            delivery = await deliver_one(runtime, client, url, create_with=resolver, send_with=resolver)
            recorded[name] = (delivery["last_error"], delivery["last_status_code"], delivery["status"])
    assert set(recorded.values()) == {(CONNECTION_FAILED, None, "pending")}, recorded
    # The operator still sees what happened, in the log only.
    details = " ".join(record.getMessage() for record in caplog.records)
    assert "ConnectError" in details
    assert "no answer within 1 s" in details or "ReadTimeout" in details
