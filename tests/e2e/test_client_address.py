"""Only payorch's own ``ratelimit.trusted_proxies`` decides the client address: the served process
(uvicorn as ``payorch serve`` starts it) must not believe ``X-Forwarded-For`` from a loopback peer
when no proxy is trusted, neither for the per-IP limit nor for the audit trail's origin."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from tests.factories import audit_payloads_naming, charge_body, create_merchant
from tests.integration.served_payorch import serve

from payorch.runtime import Runtime

pytestmark = pytest.mark.e2e


async def test_forwarded_for_from_loopback_changes_neither_the_ip_limit_nor_the_origin(
    database_url: str, runtime: Runtime, tmp_path: Path
) -> None:
    merchant = await create_merchant(runtime)
    env = {
        "PAYORCH_RATELIMIT__ENABLED": "true",
        "PAYORCH_RATELIMIT__IP_LIMIT__REQUESTS": "4",
        "PAYORCH_RATELIMIT__IP_LIMIT__WINDOW_SECONDS": "3600",
    }
    with serve(database_url, tmp_path, env) as served, httpx.Client(base_url=served.url, timeout=30) as http:
        created = http.post(
            "/v1/charges", json=charge_body(), headers={**merchant.headers, "X-Forwarded-For": "198.51.100.7"}
        )
        assert created.status_code == 201, created.text
        statuses = [
            http.get("/v1/charges", headers={**merchant.headers, "X-Forwarded-For": f"203.0.113.{n}"}).status_code
            for n in range(1, 5)
        ]
    # One client (the loopback peer): its 4 requests an hour are spent whatever each one claims.
    assert statuses == [200, 200, 200, 429]

    payloads = await audit_payloads_naming(runtime, created.json()["id"])
    assert payloads, "creating a charge writes an audit event"
    assert {payload["origin"]["ip"] for payload in payloads} == {"127.0.0.1"}
