"""Tenant isolation, route by route: another merchant's key gets 404 for every id (never 403, never
the object), lists never show another merchant's objects, and a test-mode key never sees live-mode
objects nor the reverse (DESIGN.md section 11).

The matrix is checked against the app's own routes: a route added without an entry fails
``test_every_route_has_a_matrix_entry``, so isolation is decided for each new route, not assumed.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.conftest import make_settings
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.fakes.oauth_provider import FakeOAuthProvider, banking_settings

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings


@dataclass(frozen=True)
class ById:
    """The path names one object of ``kind``: a foreign or other-mode caller gets exactly the 404 an
    unknown id gets. ``mutates``: the owner's own call changes it, so it is made last."""

    kind: str
    body: dict[str, Any] | None = None
    mutates: bool = False


@dataclass(frozen=True)
class Listing:
    """A list of ``kind`` objects: only the caller's own, in the caller's mode."""

    kind: str
    query: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ByReference:
    """The body names another object (``{"charge": "ch_..."}``): a foreign one answers like an unknown one."""

    kind: str
    build: Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class Exempt:
    reason: str


Entry = ById | Listing | ByReference | Exempt

MATRIX: dict[tuple[str, str], Entry] = {
    ("GET", "/healthz"): Exempt("no merchant data"),
    ("GET", "/readyz"): Exempt("no merchant data"),
    ("GET", "/metrics"): Exempt("aggregate counters, no merchant ids (checked in test_secret_hygiene)"),
    ("POST", "/v1/charges"): ByReference("payment_method", lambda pm: {**charge_body(), "payment_method": pm}),
    ("GET", "/v1/charges"): Listing("charge", query={"limit": 100}),
    ("GET", "/v1/charges/{charge_id}"): ById("charge"),
    ("POST", "/v1/charges/{charge_id}/capture"): ById("authorized_charge", body={}, mutates=True),
    ("POST", "/v1/charges/{charge_id}/cancel"): ById("authorized_charge_2", mutates=True),
    ("POST", "/v1/charges/{charge_id}/confirm"): ById("requires_action_charge", body={}, mutates=True),
    ("POST", "/v1/refunds"): ByReference("refundable_charge", lambda charge: {"charge": charge}),
    ("GET", "/v1/refunds/{refund_id}"): ById("refund"),
    ("POST", "/v1/payment_methods"): Exempt("creates from gateway tokens; names no existing object"),
    ("GET", "/v1/payment_methods/{payment_method_id}"): ById("payment_method"),
    ("POST", "/v1/webhook_endpoints"): Exempt("creates; names no existing object"),
    ("GET", "/v1/webhook_endpoints"): Listing("webhook_endpoint"),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}"): ById("webhook_endpoint"),
    ("DELETE", "/v1/webhook_endpoints/{endpoint_id}"): ById("webhook_endpoint_2", mutates=True),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/rotate_secret"): ById("webhook_endpoint", body={}, mutates=True),
    ("GET", "/v1/webhook_endpoints/{endpoint_id}/deliveries"): ById("webhook_endpoint"),
    ("POST", "/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver"): ById(
        "webhook_delivery", mutates=True
    ),
    ("POST", "/v1/gateway_webhooks/{gateway}"): Exempt("called by gateways, signed per gateway; no merchant key"),
    ("POST", "/v1/bank_links"): Exempt("creates; names no existing object"),
    ("GET", "/v1/bank_links/callback"): Exempt("the provider's redirect: single-use state, no key (test_bank_links)"),
    ("GET", "/v1/bank_links/{bank_link_id}"): ById("bank_link"),
    ("POST", "/v1/gateway_accounts"): Exempt("creates; names no existing object"),
    ("GET", "/v1/gateway_accounts"): Listing("gateway_account"),
    ("GET", "/v1/gateway_accounts/{account_id}"): ById("gateway_account"),
    ("POST", "/v1/gateway_accounts/{account_id}"): ById("gateway_account", body={"enabled": True}, mutates=True),
    ("DELETE", "/v1/gateway_accounts/{account_id}"): ById("gateway_account_2", mutates=True),
    ("PUT", "/v1/routing"): ByReference(
        "gateway_account", lambda account: {"default": {"strategy": "priority", "accounts": [account]}}
    ),
    ("GET", "/v1/routing"): Exempt("the caller's own configuration, no id (test_routing: never another's)"),
    ("POST", "/v1/routing/evaluate"): ByReference(
        "payment_method", lambda pm: {"amount": 500, "currency": "usd", "payment_method": pm}
    ),
}


def _walk_routes(routes: Any) -> Iterator[tuple[str, str]]:
    for route in routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI's included routers (0.16x)
            for context in route.effective_route_contexts():
                for method in getattr(context.original_route, "methods", None) or ():
                    yield method, context.path
        else:
            for method in getattr(route, "methods", None) or ():
                yield method, route.path


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    """Every (method, path) the app serves, documented or not; the OpenAPI document's too, so a
    change in how FastAPI nests routers cannot hide a route from the matrix."""
    app = create_app(settings)
    served = {(method, path) for method, path in _walk_routes(app.routes) if method != "HEAD"}
    documented = {(m.upper(), p) for p, item in app.openapi()["paths"].items() for m in item}
    assert documented, "the app documents no route"
    internal = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    return {(m, p) for m, p in served | documented if p not in internal}


def test_every_route_has_a_matrix_entry(iso_settings: Settings) -> None:
    routes = app_routes(iso_settings)
    missing = sorted(routes - set(MATRIX))
    assert not missing, f"routes with no isolation matrix entry: {missing}"
    stale = sorted(set(MATRIX) - routes)
    assert not stale, f"matrix entries for routes that no longer exist: {stale}"


# --- the objects each merchant owns ---------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def iso_settings(database_url: str, provider: FakeOAuthProvider, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("isolation-data")
    secrets_config = {"local_directory": str(data_dir / "secrets")}
    return make_settings(
        database_url, data_dir=str(data_dir), banking=banking_settings(provider, secrets_config=secrets_config)
    )


@pytest.fixture(scope="module")
async def iso_runtime(iso_settings: Settings, database_url: str) -> AsyncIterator[Runtime]:
    built = await Runtime.build(iso_settings, database_url)
    yield built
    await built.aclose()


@pytest.fixture(scope="module")
async def iso_client(iso_settings: Settings, iso_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(iso_settings, runtime=iso_runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http


@dataclass
class Owned:
    """One merchant's objects in one mode, by kind; ``path_ids`` fills a route's path parameters."""

    merchant: MerchantFixture
    headers: dict[str, str]
    objects: dict[str, str] = field(default_factory=dict)
    deliveries: dict[str, str] = field(default_factory=dict)


async def _created(response: httpx.Response) -> str:
    assert response.status_code in (200, 201), response.text
    object_id: str = response.json()["id"]
    return object_id


async def make_objects(
    client: httpx.AsyncClient, runtime: Runtime, merchant: MerchantFixture, headers: dict[str, str]
) -> Owned:
    owned = Owned(merchant, headers)
    post = client.post

    def charge(**extra: Any) -> Awaitable[httpx.Response]:
        return post("/v1/charges", json=charge_body(**extra), headers=headers)

    owned.objects["charge"] = await _created(await charge())
    owned.objects["refundable_charge"] = await _created(await charge())
    owned.objects["authorized_charge"] = await _created(await charge(capture=False))
    owned.objects["authorized_charge_2"] = await _created(await charge(capture=False))
    waiting = await charge(token="tok_threeDSecureRequired", return_url="https://shop.example/back")
    assert waiting.status_code == 202, waiting.text
    owned.objects["requires_action_charge"] = waiting.json()["id"]
    refunded = await _created(await charge())
    owned.objects["refund"] = await _created(await post("/v1/refunds", json={"charge": refunded}, headers=headers))
    owned.objects["payment_method"] = await _created(
        await post("/v1/payment_methods", json={"tokens": {"sandbox": "tok_visa"}}, headers=headers)
    )
    endpoint = {"url": "https://93.184.215.14/payorch-hook", "enabled_events": ["*"]}
    for kind in ("webhook_endpoint", "webhook_endpoint_2"):
        owned.objects[kind] = await _created(await post("/v1/webhook_endpoints", json=endpoint, headers=headers))
    owned.objects["bank_link"] = await _created(
        await post("/v1/bank_links", json={"user_reference": "user-iso"}, headers=headers)
    )
    for kind in ("gateway_account", "gateway_account_2"):
        account = {"gateway": "sandbox", "name": f"iso_{secrets.token_hex(4)}"}
        owned.objects[kind] = await _created(await post("/v1/gateway_accounts", json=account, headers=headers))
    return owned


async def add_delivery(client: httpx.AsyncClient, runtime: Runtime, owned: Owned) -> None:
    """A delivery to the owner's endpoint: a charge makes an event, the dispatcher's fan-out the delivery."""
    endpoint = owned.objects["webhook_endpoint"]
    await client.post("/v1/charges", json=charge_body(), headers=owned.headers)
    await runtime.webhooks.dispatcher._fan_out()
    listed = await client.get(f"/v1/webhook_endpoints/{endpoint}/deliveries", headers=owned.headers)
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"], "the fan-out made no delivery for the owner's endpoint"
    owned.objects["webhook_delivery"] = listed.json()["data"][0]["id"]
    owned.deliveries["webhook_delivery"] = endpoint


@dataclass
class World:
    owner_test: Owned
    owner_live: Owned
    stranger: MerchantFixture


@pytest.fixture(scope="module")
async def world(iso_client: httpx.AsyncClient, iso_runtime: Runtime) -> World:
    owner = await create_merchant(iso_runtime, "Isolation owner")
    stranger = await create_merchant(iso_runtime, "Isolation stranger")
    test_objects = await make_objects(iso_client, iso_runtime, owner, owner.headers)
    live_objects = await make_objects(iso_client, iso_runtime, owner, owner.live_headers)
    await add_delivery(iso_client, iso_runtime, test_objects)
    await add_delivery(iso_client, iso_runtime, live_objects)
    # The stranger has objects too, so its lists are not trivially empty.
    await make_objects(iso_client, iso_runtime, stranger, stranger.headers)
    return World(test_objects, live_objects, stranger)


_PARAM = re.compile(r"\{([a-z_]+)\}")


def fill(path: str, kind: str, owned: Owned, object_id: str | None = None) -> str:
    """The route's path for ``owned``'s object of ``kind`` (or ``object_id`` in its place)."""
    target = object_id or owned.objects[kind]
    params = _PARAM.findall(path)
    values: dict[str, str] = {}
    if kind in owned.deliveries:  # /webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/...
        values = {params[0]: owned.deliveries[kind], params[1]: target}
    else:
        assert len(params) == 1, path
        values = {params[0]: target}
    return _PARAM.sub(lambda m: values[m.group(1)], path)


def unknown_like(object_id: str) -> str:
    """An id of the same shape that names nothing."""
    prefix, _, rest = object_id.partition("_")
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    return f"{prefix}_{''.join(secrets.choice(alphabet) for _ in rest)}"


def strangers(world: World, owned: Owned) -> list[tuple[str, dict[str, str]]]:
    """Everyone who must not see ``owned``'s objects: the other merchant in both modes, the owner's other mode."""
    other_mode = world.owner_live.headers if owned is world.owner_test else world.owner_test.headers
    return [
        ("another merchant, test key", world.stranger.headers),
        ("another merchant, live key", world.stranger.live_headers),
        ("the owner's other mode", other_mode),
    ]


def assert_same_refusal(foreign: httpx.Response, unknown: httpx.Response, foreign_id: str, unknown_id: str) -> None:
    """The answer for someone else's object is the answer for no object at all: 404 (never 403), the
    same code and message with only the id differing, and nothing of the object."""
    assert foreign.status_code == 404, foreign.text
    assert unknown.status_code == 404, unknown.text
    error, reference = foreign.json()["error"], unknown.json()["error"]
    assert error["type"] == reference["type"] == "invalid_request_error"
    assert error["code"] == reference["code"]
    assert error["message"].replace(foreign_id, "<id>") == reference["message"].replace(unknown_id, "<id>")
    assert set(foreign.json()) == {"error"}


async def call(client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any) -> httpx.Response:
    return await client.request(method, url, headers=headers, json=body)


BY_ID = sorted((key, entry) for key, entry in MATRIX.items() if isinstance(entry, ById))


@pytest.mark.parametrize("mode", ["test", "live"])
@pytest.mark.parametrize(("route", "entry"), BY_ID, ids=[f"{m} {p}" for (m, p), _ in BY_ID])
async def test_by_id_routes_answer_404_to_everyone_else(
    iso_client: httpx.AsyncClient, world: World, route: tuple[str, str], entry: ById, mode: str
) -> None:
    method, path = route
    owned = world.owner_test if mode == "test" else world.owner_live
    object_id = owned.objects[entry.kind]
    url = fill(path, entry.kind, owned)
    before = await iso_client.get(_read_back(entry.kind, owned), headers=owned.headers)

    for who, headers in strangers(world, owned):
        foreign = await call(iso_client, method, url, headers, entry.body)
        missing_id = unknown_like(object_id)
        unknown = await call(iso_client, method, fill(path, entry.kind, owned, missing_id), headers, entry.body)
        assert_same_refusal(foreign, unknown, object_id, missing_id)
        assert foreign.status_code == 404, who

    # Nothing the strangers did changed the object; and the route does find it for its owner.
    after = await iso_client.get(_read_back(entry.kind, owned), headers=owned.headers)
    assert after.status_code == 200
    assert _stable(after.json()) == _stable(before.json())
    own = await call(iso_client, method, url, owned.headers, entry.body)
    assert own.status_code in (200, 201, 202), own.text


def _read_back(kind: str, owned: Owned) -> str:
    """A read of the object's state, to show a refused call changed nothing."""
    object_id = owned.objects[kind]
    if kind in owned.deliveries:
        return f"/v1/webhook_endpoints/{owned.deliveries[kind]}/deliveries"
    collections = {"charge": "charges", "refund": "refunds", "payment_method": "payment_methods"}
    collections |= {"webhook_endpoint": "webhook_endpoints", "bank_link": "bank_links"}
    collections |= {"gateway_account": "gateway_accounts"}
    collection = next(name for word, name in collections.items() if word in kind)
    return f"/v1/{collection}/{object_id}"


def _stable(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("updated",)}


LISTINGS = sorted((key, entry) for key, entry in MATRIX.items() if isinstance(entry, Listing))


@pytest.mark.parametrize(("route", "entry"), LISTINGS, ids=[f"{m} {p}" for (m, p), _ in LISTINGS])
async def test_lists_show_only_the_callers_own_objects_in_its_mode(
    iso_client: httpx.AsyncClient, world: World, route: tuple[str, str], entry: Listing
) -> None:
    method, path = route

    async def listed(headers: dict[str, str]) -> set[str]:
        response = await iso_client.request(method, path, headers=headers, params=entry.query)
        assert response.status_code == 200, response.text
        return {item["id"] for item in response.json()["data"]}

    test_ids = {world.owner_test.objects[entry.kind]}
    live_ids = {world.owner_live.objects[entry.kind]}
    assert test_ids <= await listed(world.owner_test.headers)
    assert live_ids <= await listed(world.owner_live.headers)
    assert not (await listed(world.owner_test.headers)) & live_ids
    assert not (await listed(world.owner_live.headers)) & test_ids
    stranger_sees = await listed(world.stranger.headers)
    assert stranger_sees, "the stranger's own (test-mode) objects should be listed"
    assert not stranger_sees & (test_ids | live_ids)
    assert not (await listed(world.stranger.live_headers)) & (test_ids | live_ids)


BY_REFERENCE = sorted((key, entry) for key, entry in MATRIX.items() if isinstance(entry, ByReference))


@pytest.mark.parametrize(("route", "entry"), BY_REFERENCE, ids=[f"{m} {p}" for (m, p), _ in BY_REFERENCE])
async def test_bodies_naming_someone_elses_object_are_refused_like_unknown_ids(
    iso_client: httpx.AsyncClient, world: World, route: tuple[str, str], entry: ByReference
) -> None:
    method, path = route
    for owned in (world.owner_test, world.owner_live):
        object_id = owned.objects[entry.kind]
        for who, headers in strangers(world, owned):
            foreign = await call(iso_client, method, path, headers, entry.build(object_id))
            missing_id = unknown_like(object_id)
            unknown = await call(iso_client, method, path, headers, entry.build(missing_id))
            assert foreign.status_code == unknown.status_code, (who, foreign.text)
            assert foreign.status_code in (400, 404), (who, foreign.text)
            error, reference = foreign.json()["error"], unknown.json()["error"]
            assert error["code"] == reference["code"], who
            assert error["message"].replace(object_id, "<id>") == reference["message"].replace(missing_id, "<id>")
            assert set(foreign.json()) == {"error"}
