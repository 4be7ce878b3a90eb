"""The middleware through a real ASGI stack: 429 shape, IETF fields, client IP, routes, overrides."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from payorch.ratelimit import (
    Limit,
    MemoryLimiter,
    MerchantOverride,
    RateLimitConfig,
    RateLimitMiddleware,
    RoutePolicy,
    client_ip,
)
from payorch.ratelimit.middleware import RouteTable

POLICY = re.compile(r'"(?P<name>[a-z_]+)";q=(?P<q>\d+);w=(?P<w>\d+)')
STATE = re.compile(r'"(?P<name>[a-z_]+)";r=(?P<r>\d+);t=(?P<t>\d+)')


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def make_app(config: RateLimitConfig, limiter: MemoryLimiter | None = None, **kwargs: object) -> ASGIApp:
    inner = Starlette(
        routes=[
            Route("/v1/charges", ok, methods=["GET", "POST"]),
            Route("/v1/charges/{id}", ok),
            Route("/healthz", ok),
        ]
    )
    limiter = MemoryLimiter() if limiter is None else limiter  # an empty limiter is falsy (__len__)
    return RateLimitMiddleware(inner, limiter, config, **kwargs)  # type: ignore[arg-type]


def client(app: ASGIApp, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def config(**overrides: object) -> RateLimitConfig:
    values: dict[str, object] = {
        "key_limit": {"requests": 5, "window_seconds": 60},
        "ip_limit": {"requests": 50, "window_seconds": 60},
        "routes": {"POST /v1/charges": {"name": "charges_create", "limit": {"requests": 2, "window_seconds": 60}}},
    }
    values.update(overrides)
    return RateLimitConfig.model_validate(values)


AUTH = {"Authorization": "Bearer sk_test_alpha"}


async def test_every_limited_response_carries_ietf_fields() -> None:
    async with client(make_app(config())) as http:
        response = await http.get("/v1/charges", headers=AUTH)
    assert response.status_code == 200
    policies = {m["name"]: (int(m["q"]), int(m["w"])) for m in POLICY.finditer(response.headers["RateLimit-Policy"])}
    assert policies == {"ip": (50, 60), "default": (5, 60)}
    states = {m["name"]: int(m["r"]) for m in STATE.finditer(response.headers["RateLimit"])}
    assert states == {"ip": 49, "default": 4}


async def test_refusal_is_429_with_envelope_retry_after_and_fields() -> None:
    # A clock held 30 s into a 60 s window: the five requests fill the current window, so the
    # sliding estimate falls back under the limit 12 s into the next one (5 * 48/60 = 4 < 5),
    # 42 s from now. Retry-After can exceed the window itself; it never exceeds two windows.
    limiter = MemoryLimiter(clock=lambda: 60.0 * 20_000 + 30)
    async with client(make_app(config(), limiter)) as http:
        statuses = [(await http.get("/v1/charges", headers=AUTH)).status_code for _ in range(5)]
        refused = await http.get("/v1/charges", headers=AUTH)
    assert statuses == [200] * 5
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["code"] == "rate_limited"
    assert error["message"]
    assert error["request_id"] == refused.headers["Request-Id"]
    assert int(refused.headers["Retry-After"]) == 42
    states = {m["name"]: int(m["r"]) for m in STATE.finditer(refused.headers["RateLimit"])}
    assert states["default"] == 0
    assert refused.headers["RateLimit-Policy"]


async def test_refusal_reuses_the_request_id_an_outer_layer_chose() -> None:
    limited = make_app(config(key_limit={"requests": 1, "window_seconds": 60}))

    async def with_request_id(scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["request_id"] = "req_outer123"
        await limited(scope, receive, send)

    async with client(with_request_id) as http:
        await http.get("/v1/charges", headers=AUTH)
        refused = await http.get("/v1/charges", headers=AUTH)
    assert refused.status_code == 429
    assert refused.json()["error"]["request_id"] == "req_outer123"


async def test_charge_creation_has_its_own_tighter_budget() -> None:
    async with client(make_app(config())) as http:
        creates = [await http.post("/v1/charges", headers=AUTH) for _ in range(3)]
        read = await http.get("/v1/charges/ch_1", headers=AUTH)
    assert [r.status_code for r in creates] == [200, 200, 429]
    assert '"charges_create";q=2;w=60' in creates[-1].headers["RateLimit-Policy"]
    assert read.status_code == 200
    assert [m["name"] for m in POLICY.finditer(read.headers["RateLimit-Policy"])] == ["ip", "default"]


async def test_route_cost_draws_several_units() -> None:
    cfg = config(routes={"GET /v1/charges/{id}": {"name": "charge_read", "cost": 2}})
    async with client(make_app(cfg)) as http:
        statuses = [(await http.get("/v1/charges/ch_1", headers=AUTH)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 2 + 2 of 5, then 2 more do not fit


async def test_keys_are_limited_separately() -> None:
    async with client(make_app(config(key_limit={"requests": 1, "window_seconds": 60}))) as http:
        first = await http.get("/v1/charges", headers=AUTH)
        other = await http.get("/v1/charges", headers={"Authorization": "Bearer sk_test_beta"})
    assert (first.status_code, other.status_code) == (200, 200)


async def test_merchant_override_replaces_the_default_budget() -> None:
    alpha = hashlib.sha256(b"sk_test_alpha").hexdigest()

    async def merchant_for(identity: str) -> str | None:
        return "mer_big" if identity == alpha else None

    cfg = config(merchant_overrides={"mer_big": {"key_limit": {"requests": 8, "window_seconds": 60}}})
    async with client(make_app(cfg, merchant_for=merchant_for)) as http:
        big = [(await http.get("/v1/charges", headers=AUTH)).status_code for _ in range(8)]
        small = [
            (await http.get("/v1/charges", headers={"Authorization": "Bearer sk_test_beta"})).status_code
            for _ in range(6)
        ]
    assert big == [200] * 8
    assert small == [200] * 5 + [429]


async def test_unauthenticated_requests_meet_the_ip_guard_only() -> None:
    async with client(make_app(config(ip_limit={"requests": 3, "window_seconds": 60}))) as http:
        statuses = [(await http.get("/v1/charges")).status_code for _ in range(4)]
        last = await http.get("/v1/charges")
    assert statuses == [200, 200, 200, 429]
    assert [m["name"] for m in POLICY.finditer(last.headers["RateLimit-Policy"])] == ["ip"]


async def test_health_and_metrics_are_never_limited() -> None:
    async with client(make_app(config(ip_limit={"requests": 1, "window_seconds": 60}))) as http:
        statuses = [(await http.get("/healthz")).status_code for _ in range(5)]
        response = await http.get("/healthz")
    assert statuses == [200] * 5
    assert "RateLimit" not in response.headers


async def test_forged_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    app = make_app(config(ip_limit={"requests": 2, "window_seconds": 60}))
    async with client(app, peer="198.51.100.9") as http:
        statuses = [
            (await http.get("/v1/charges", headers={"X-Forwarded-For": f"10.0.0.{n}"})).status_code for n in range(3)
        ]
    assert statuses == [200, 200, 429]  # one client, whatever it claims


async def test_forwarded_for_from_a_trusted_proxy_is_honoured() -> None:
    app = make_app(config(ip_limit={"requests": 2, "window_seconds": 60}, trusted_proxies=["10.1.0.0/16"]))
    async with client(app, peer="10.1.0.5") as http:
        spread = [
            (await http.get("/v1/charges", headers={"X-Forwarded-For": f"198.51.100.{n}"})).status_code
            for n in range(4)
        ]
        same = [(await http.get("/v1/charges", headers={"X-Forwarded-For": "192.0.2.1"})).status_code for _ in range(3)]
    assert spread == [200] * 4  # four clients behind one proxy
    assert same == [200, 200, 429]


def scope_with(peer: str, *forwarded: str) -> Scope:
    return {
        "type": "http",
        "client": (peer, 1234),
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.7", ["1.1.1.1"], "203.0.113.7"),  # untrusted peer: header ignored
        ("10.0.0.2", ["1.1.1.1"], "1.1.1.1"),
        ("10.0.0.2", ["6.6.6.6, 1.1.1.1, 10.0.0.3"], "1.1.1.1"),  # forged left part skipped
        ("10.0.0.2", ["6.6.6.6", "1.1.1.1:4431"], "1.1.1.1"),  # several header lines, port
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.2", ["10.0.0.9"], "10.0.0.9"),  # every hop trusted: the farthest one
        ("10.0.0.2", ["1.1.1.1, garbage"], "10.0.0.2"),  # our proxy wrote nonsense
        ("10.0.0.2", [], "10.0.0.2"),
        ("::ffff:203.0.113.7", [], "203.0.113.7"),
    ],
)
def test_client_ip(peer: str, forwarded: list[str], expected: str) -> None:
    trusted = RateLimitConfig(trusted_proxies=["10.0.0.0/8"]).trusted_proxies
    assert client_ip(scope_with(peer, *forwarded), trusted) == expected


def test_trusted_proxies_from_a_comma_separated_env_value() -> None:
    cfg = RateLimitConfig.model_validate({"trusted_proxies": "10.0.0.0/8, 2001:db8::/32"})
    assert [str(net) for net in cfg.trusted_proxies] == ["10.0.0.0/8", "2001:db8::/32"]


def test_default_config_trusts_nobody_and_has_stripe_like_budgets() -> None:
    """Until issue 18 the defaults also gave charge creation its own, tighter budget (20 a minute),
    which throttled real merchants; per-route budgets are now an option, not a default."""
    cfg = RateLimitConfig()
    assert cfg.trusted_proxies == []
    assert RouteTable(cfg.routes).match("POST", "/v1/charges") is None
    live, test = cfg.key_limit_for(livemode=True), cfg.key_limit_for(livemode=False)
    assert live.requests / live.window_seconds == 100
    assert test.requests / test.window_seconds == 25
    assert cfg.ip_limit.requests / cfg.ip_limit.window_seconds > live.requests / live.window_seconds


def test_a_test_key_never_gets_more_than_a_live_one() -> None:
    tight = RateLimitConfig(key_limit={"requests": 5, "window_seconds": 60})
    assert tight.key_limit_for(livemode=False) == tight.key_limit
    assert RateLimitConfig(test_key_limit=None).key_limit_for(livemode=False) == RateLimitConfig().key_limit


def test_route_table_prefers_literal_paths() -> None:
    table = RouteTable(
        {
            "POST /v1/charges/{id}": RoutePolicy(name="update"),
            "POST /v1/charges/{id}/capture": RoutePolicy(name="capture", cost=3),
            "* /v1/refunds": RoutePolicy(name="refunds"),
        }
    )
    assert table.match("POST", "/v1/charges/ch_1/capture/").name == "capture"  # type: ignore[union-attr]
    assert table.match("POST", "/v1/charges/ch_1").name == "update"  # type: ignore[union-attr]
    assert table.match("GET", "/v1/refunds").name == "refunds"  # type: ignore[union-attr]
    assert table.match("GET", "/v1/charges/ch_1") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"routes": {"/v1/charges": {"name": "x"}}},
        {"routes": {"POST /a": {"name": "default"}}},
        {"routes": {"POST /a": {"name": "a", "cost": 6, "limit": {"requests": 5, "window_seconds": 1}}}},
        {"merchant_overrides": {"mer_1": {"routes": {"nope": {"requests": 1, "window_seconds": 1}}}}},
        {"trusted_proxies": ["not-a-cidr"]},
    ],
)
def test_bad_config_is_refused_at_start(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(bad)


def test_merchant_override_model() -> None:
    override = MerchantOverride(routes={"charges_create": Limit(requests=50, window_seconds=60)})
    routes = {"POST /v1/charges": RoutePolicy(name="charges_create", limit=Limit(requests=20, window_seconds=60))}
    limits = RateLimitConfig(routes=routes, merchant_overrides={"mer_1": override})
    assert limits.merchant_overrides["mer_1"] == override
