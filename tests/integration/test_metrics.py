"""GET /metrics through the real app: what an operator's Prometheus scrapes after real charges."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tests.conftest import make_settings
from tests.factories import charge_body, create_merchant, post_charge, query

from payorch.app import create_app
from payorch.runtime import Runtime

AMOUNT = 4217  # distinctive: it must never show up in a label
ID_LIKE = re.compile(r"\b(ch|att|mer|key|req|aud|re|pm|evt)_[0-9A-Za-z]{6,}")


@pytest.fixture
async def scraped_app(database_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = make_settings(
        database_url,
        ratelimit={"enabled": True, "key_limit": {"requests": 1000, "window_seconds": 60}},
        breaker={"minimum_calls": 2, "failure_rate": 0.5, "open_seconds": 600},
    )
    built = await Runtime.build(settings, database_url)
    transport = httpx.ASGITransport(app=create_app(settings, runtime=built), client=("10.9.8.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as client:
        yield client, built
    await built.aclose()


def _samples(body: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(body) for sample in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


async def test_metrics_after_charges(scraped_app: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = scraped_app
    merchant = await create_merchant(runtime)
    approved = await post_charge(client, merchant, charge_body(amount=AMOUNT))
    declined = await post_charge(client, merchant, charge_body("tok_chargeDeclined", amount=AMOUNT))
    unsent = [await post_charge(client, merchant, charge_body("tok_unavailable", amount=AMOUNT)) for _ in range(2)]
    assert (approved.status_code, declined.status_code) == (201, 402)
    assert [u.status_code for u in unsent] == [503, 503]
    assert (await client.get(f"/v1/charges/{approved.json()['id']}", headers=merchant.headers)).status_code == 200
    assert (await client.get("/v1/charges/ch_doesnotexist", headers=merchant.headers)).status_code == 404

    scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    samples = _samples(scrape.text)

    assert _value(samples, "payorch_charges_total", gateway="sandbox", outcome="succeeded") == 1
    assert _value(samples, "payorch_charges_total", gateway="sandbox", outcome="failed") == 3
    assert _value(samples, "payorch_gateway_attempts_total", gateway="sandbox", outcome="approved") == 1
    assert _value(samples, "payorch_gateway_attempts_total", gateway="sandbox", outcome="hard_decline") == 1
    assert _value(samples, "payorch_gateway_attempts_total", gateway="sandbox", outcome="not_sent") == 2
    assert _value(samples, "payorch_gateway_attempt_seconds_count", gateway="sandbox") == 4
    # Two failures out of two calls opened the sandbox breaker; the backup was never called.
    assert _value(samples, "payorch_gateway_breaker_state", gateway="sandbox") == 2
    assert _value(samples, "payorch_gateway_breaker_state", gateway="sandbox_backup") == 0

    route = "/v1/charges/{charge_id}"
    assert _value(samples, "payorch_http_requests_total", method="GET", route=route, status="200") == 1
    assert _value(samples, "payorch_http_requests_total", method="GET", route=route, status="404") == 1
    assert _value(samples, "payorch_http_requests_total", method="POST", route="/v1/charges", status="503") == 2
    assert _value(samples, "payorch_http_request_duration_seconds_count", method="POST", route="/v1/charges") == 4

    assert _value(samples, "payorch_ratelimit_decisions_total", decision="allowed") == 6
    assert _value(samples, "payorch_ratelimit_fallbacks_total") == 0
    assert "# TYPE payorch_webhook_deliveries_total counter" in scrape.text

    [(unresolved,)] = await query(
        runtime.db, "SELECT count(*) FROM charge_attempts WHERE status IN ('pending', 'unknown')"
    )
    assert _value(samples, "payorch_reconciler_backlog") == unresolved
    # Nothing ships in this runtime: the audit events of these charges wait in the outbox.
    assert _value(samples, "payorch_audit_outbox_lag_seconds", sink="local") > 0


async def test_no_label_carries_an_id_an_amount_or_a_secret(scraped_app: tuple[httpx.AsyncClient, Runtime]) -> None:
    client, runtime = scraped_app
    merchant = await create_merchant(runtime)
    body = charge_body(amount=AMOUNT, description=f"order {AMOUNT}", metadata={"order_id": "ord_123456789"})
    created = await post_charge(client, merchant, body, key="idem-metrics-label-check")
    assert created.status_code == 201
    charge_id = created.json()["id"]
    await client.get(f"/v1/charges/{charge_id}", headers=merchant.headers)
    await client.get(f"/v1/charges?starting_after={charge_id}", headers=merchant.headers)
    await client.get(f"/v1/nothing/{merchant.key}")
    await client.post(f"/v1/charges/{charge_id}/nowhere", headers=merchant.headers)

    text = (await client.get("/metrics")).text
    for sample in _samples(text):
        for name, value in sample.labels.items():
            if name in ("le", "status"):
                continue
            assert not ID_LIKE.search(value), (sample.name, name, value)
            assert str(AMOUNT) not in value, (sample.name, name, value)
            assert "sk_" not in value, (sample.name, name, value)
            assert "ord_" not in value, (sample.name, name, value)
    for secret in (charge_id, merchant.id, merchant.key, merchant.key_id, created.headers["Request-Id"]):
        assert secret not in text
    assert 'route="unmatched"' in text


async def test_each_runtime_has_its_own_registry(
    scraped_app: tuple[httpx.AsyncClient, Runtime], database_url: str
) -> None:
    _, runtime = scraped_app
    other = await Runtime.build(make_settings(database_url), database_url)
    try:
        assert other.metrics.registry is not runtime.metrics.registry
        other.metrics.charge_finished("sandbox", "succeeded")
        theirs = _samples(other.metrics.render().decode())
        ours = _samples(runtime.metrics.render().decode())
        assert _value(theirs, "payorch_charges_total", gateway="sandbox", outcome="succeeded") == 1
        assert not [s for s in ours if s.name == "payorch_charges_total"]
    finally:
        await other.aclose()
    # The process-wide default registry holds none of payorch's metrics.
    assert not [m for m in prometheus_client.REGISTRY.collect() if m.name.startswith("payorch_")]
