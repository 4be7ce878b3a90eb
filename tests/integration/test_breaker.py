"""The circuit breaker: its state machine on a hand-driven clock, then through the real app against
the gateway fakes (an open breaker skips its gateway without sending it anything)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from orchestration_support import (
    Fakes,
    attempt_ids,
    attempt_rows,
    charge_body,
    gateway_configs,
    holdings,
    running_fakes,
    runtime_for,
)
from tests.factories import create_merchant
from tests.fakes.stripe_server import Fault

from payorch.app import create_app
from payorch.gateways.base import Outcome
from payorch.orchestration.breaker import BreakerConfig, BreakerState, CircuitBreakers


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breakers(clock: Clock, **config: float) -> CircuitBreakers:
    values = {"window_seconds": 10, "minimum_calls": 4, "failure_rate": 0.5, "open_seconds": 5, "half_open_probes": 2}
    return CircuitBreakers(BreakerConfig(**{**values, **config}), {"stripe": 1.0, "adyen": 8.0}, clock=clock)


def test_declines_are_not_failures() -> None:
    clock = Clock()
    subject = breakers(clock)
    for _ in range(20):
        subject.record("stripe", Outcome.HARD_DECLINE, 0.1)
        subject.record("stripe", Outcome.SOFT_DECLINE, 0.1)
    assert subject.states() == {"stripe": "closed", "adyen": "closed"}


def test_it_opens_on_the_failure_rate_only_past_the_minimum_volume() -> None:
    clock = Clock()
    subject = breakers(clock)
    subject.record("stripe", Outcome.NOT_SENT, 0.1)
    subject.record("stripe", Outcome.UNKNOWN, 0.1)
    subject.record("stripe", Outcome.APPROVED, 0.1)
    assert subject.state("stripe") is BreakerState.CLOSED  # 3 calls: under the minimum of 4
    subject.record("stripe", Outcome.APPROVED, 0.1)  # 2 of 4 failed: 50%
    assert subject.state("stripe") is BreakerState.OPEN
    assert not subject.allows("stripe")
    assert subject.allows("adyen")  # per gateway
    assert subject.states() == {"stripe": "open", "adyen": "closed"}


def test_requests_the_gateway_refused_as_invalid_are_not_failures() -> None:
    """A merchant sending bad tokens must not open the breaker for everyone's charges."""
    clock = Clock()
    subject = breakers(clock)
    for _ in range(20):
        subject.record("stripe", Outcome.NOT_SENT, 0.1, refused=True)
    assert subject.state("stripe") is BreakerState.CLOSED
    for _ in range(20):
        subject.record("stripe", Outcome.NOT_SENT, 0.1)  # not sent for the gateway's own reasons
    assert subject.state("stripe") is BreakerState.OPEN


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    subject = breakers(clock)
    for _ in range(3):
        subject.record("stripe", Outcome.UNKNOWN, 0.1)
    clock.now += 11  # those failures are older than the 10 s window
    subject.record("stripe", Outcome.APPROVED, 0.1)
    subject.record("stripe", Outcome.APPROVED, 0.1)
    subject.record("stripe", Outcome.APPROVED, 0.1)
    subject.record("stripe", Outcome.UNKNOWN, 0.1)
    assert subject.state("stripe") is BreakerState.CLOSED  # 1 of 4 in the window


def test_it_opens_on_the_slow_call_rate() -> None:
    clock = Clock()
    subject = breakers(clock, slow_call_rate=0.75, slow_call_fraction=0.8)
    for _ in range(3):
        subject.record("stripe", Outcome.APPROVED, 0.85)  # slow: >= 0.8 of a 1 s timeout
    subject.record("stripe", Outcome.APPROVED, 0.2)
    assert subject.state("stripe") is BreakerState.OPEN


def test_half_open_probes_close_it_or_open_it_again() -> None:
    clock = Clock()
    subject = breakers(clock)
    for _ in range(4):
        subject.record("stripe", Outcome.NOT_SENT, 0.1)
    assert not subject.allows("stripe")
    clock.now += 5
    assert subject.state("stripe") is BreakerState.HALF_OPEN
    assert subject.allows("stripe")
    assert subject.allows("stripe")
    assert not subject.allows("stripe")  # only two probes at a time
    subject.record("stripe", Outcome.APPROVED, 0.1)
    subject.record("stripe", Outcome.UNKNOWN, 0.1)  # one probe failed: open again
    assert subject.state("stripe") is BreakerState.OPEN
    clock.now += 5
    assert subject.allows("stripe")
    assert subject.allows("stripe")
    subject.record("stripe", Outcome.APPROVED, 0.1)
    subject.record("stripe", Outcome.HARD_DECLINE, 0.1)  # a decline is a healthy answer
    assert subject.state("stripe") is BreakerState.CLOSED
    assert subject.allows("stripe")


def test_a_probe_that_never_reports_is_handed_out_again() -> None:
    clock = Clock()
    subject = breakers(clock, half_open_probes=1)
    for _ in range(4):
        subject.record("stripe", Outcome.UNKNOWN, 0.1)
    clock.now += 5
    assert subject.allows("stripe")
    assert not subject.allows("stripe")
    clock.now += 5  # the probe's request was cancelled and never recorded
    assert subject.allows("stripe")


def test_disabled_breakers_allow_everything() -> None:
    clock = Clock()
    subject = CircuitBreakers(BreakerConfig(enabled=False, minimum_calls=1), {"stripe": 1.0}, clock=clock)
    subject.record("stripe", Outcome.UNKNOWN, 0.1)
    assert subject.allows("stripe")


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


async def test_an_open_breaker_skips_its_gateway_without_calling_it(database_url: str, fakes: Fakes) -> None:
    breaker = {"minimum_calls": 3, "failure_rate": 0.5, "open_seconds": 600, "window_seconds": 600}
    async with runtime_for(database_url, gateway_configs(fakes, stripe_ms=300), breaker=breaker) as runtime:
        app = create_app(runtime.settings, runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            merchant = await create_merchant(runtime)
            fakes.stripe.inject(Fault.ERROR_503_BEFORE_CHARGE, times=3)
            for _ in range(3):
                response = await client.post("/v1/charges", json=charge_body(), headers=merchant.headers)
                assert response.status_code == 201
                assert response.json()["gateway"] == "braintree"
            assert runtime.breakers.states()["stripe"] == "open"
            assert runtime.breakers.states()["braintree"] == "closed"

            # Stripe would now hang for its whole timeout; the open breaker never lets a request out.
            fakes.stripe.inject(Fault.HANG, times=5)
            sent_before = fakes.stripe.request_count
            response = await client.post("/v1/charges", json=charge_body(), headers=merchant.headers)
            assert response.status_code == 201, response.text
            created = response.json()
            assert created["gateway"] == "braintree"
            assert fakes.stripe.request_count == sent_before
            rows = await attempt_rows(runtime, merchant.id, created["id"])
            assert rows == [("stripe", "not_sent", "breaker_open"), ("braintree", "approved", "1000")]
            [held] = holdings(fakes, await attempt_ids(runtime, merchant.id, created["id"]))
            assert (held.gateway, held.amount) == ("braintree", 1500)
    fakes.stripe.clear_faults()


async def test_only_the_open_breakers_gateway_is_skipped(database_url: str, fakes: Fakes) -> None:
    """With Stripe's breaker open and Braintree refusing, the charge still reaches Adyen; with every
    gateway unavailable the merchant gets a 503, never a timeout."""
    breaker = {"minimum_calls": 2, "failure_rate": 1.0, "open_seconds": 600, "window_seconds": 600}
    async with runtime_for(database_url, gateway_configs(fakes), breaker=breaker) as runtime:
        app = create_app(runtime.settings, runtime=runtime)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            merchant = await create_merchant(runtime)
            fakes.stripe.inject(Fault.RATE_LIMITED, times=2)
            for _ in range(2):
                response = await client.post("/v1/charges", json=charge_body(), headers=merchant.headers)
                assert response.json()["gateway"] == "braintree"
            assert runtime.breakers.states() == {"stripe": "open", "braintree": "closed", "adyen": "closed"}
            response = await client.post("/v1/charges", json=charge_body(braintree=None), headers=merchant.headers)
            assert response.status_code == 201, response.text
            rows = await attempt_rows(runtime, merchant.id, response.json()["id"])
            assert [(g, s) for g, s, _ in rows] == [("stripe", "not_sent"), ("adyen", "approved")]
            assert rows[0][2] == "breaker_open"
            response = await client.post(
                "/v1/charges", json=charge_body(braintree=None, adyen=None), headers=merchant.headers
            )
            assert response.status_code == 503, response.text
            assert response.json()["error"]["type"] == "gateway_error"
