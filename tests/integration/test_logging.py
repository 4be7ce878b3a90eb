"""What the log stream holds while the real app serves charges: JSON lines carrying the request id and
the merchant, and none of the card numbers or API keys that went past."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator

import httpx
import pytest
import structlog
from tests.factories import charge_body, create_merchant, post_charge
from tests.fakes.merchant_endpoint import MerchantEndpoint
from tests.webhook_support import deliver_until, webhook_runtime

from payorch.app import create_app
from payorch.observability.logging import configure_logging, get_logger
from payorch.runtime import Runtime
from payorch.settings import Settings

CARD = "4242424242424242"
CARD_SPACED = "4000 0566 5566 5556"


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_json_lines_carry_request_and_merchant_and_no_secret(
    log_stream: io.StringIO, settings: Settings, runtime: Runtime
) -> None:
    configure_logging(json_lines=True, stream=log_stream)
    merchant = await create_merchant(runtime)
    app = create_app(settings, runtime=runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as client:
        created = await post_charge(client, merchant, charge_body(description="order 77"), key="idem-log-1")
        declined = await post_charge(client, merchant, charge_body("tok_chargeDeclined"))
        # Card numbers where no card number belongs: refused, and never written down.
        with_card = await post_charge(client, merchant, charge_body(metadata={"note": f"card {CARD}"}))
        spaced = await post_charge(client, merchant, charge_body(description=f"pan {CARD_SPACED}"))
        bad_key = await client.get("/v1/charges", headers={"Authorization": f"Bearer {merchant.key[:-4]}zzzz"})
        in_query = await client.get(f"/v1/charges?card={CARD}&key={merchant.key}", headers=merchant.headers)
    # Other libraries' stdlib loggers (uvicorn's among them) go through the same redaction.
    logging.getLogger("uvicorn.error").warning("client sent %s with card %s", merchant.key, CARD)
    get_logger("payorch.test").info("structlog line", api_key=merchant.key, card=CARD, note=f"pan {CARD}")

    assert (created.status_code, declined.status_code, bad_key.status_code) == (201, 402, 401)
    assert with_card.status_code == 400
    assert spaced.status_code == 400
    assert in_query.status_code in (200, 400)

    output = log_stream.getvalue()
    for secret in (CARD, CARD_SPACED, CARD_SPACED.replace(" ", ""), merchant.key, merchant.live_key):
        assert secret not in output
    assert merchant.key[:-4] not in output

    lines = _lines(log_stream)
    assert any(line["logger"] == "uvicorn.error" and "[REDACTED]" in str(line["event"]) for line in lines)
    structlog_line = next(line for line in lines if line["event"] == "structlog line")
    assert structlog_line["api_key"] == "[REDACTED]"

    outcomes = {created: ("succeeded", created.json()["id"]), declined: ("failed", declined.json()["error"]["charge"])}
    for response, (status, charge_id) in outcomes.items():
        request_lines = [line for line in lines if line.get("request_id") == response.headers["Request-Id"]]
        # One line per request, naming the merchant and the charge's outcome.
        assert len(request_lines) == 1, request_lines
        (charge_line,) = request_lines
        assert charge_line["merchant_id"] == merchant.id
        assert (charge_line["charge_id"], charge_line["charge_status"], charge_line["gateway"]) == (
            charge_id,
            status,
            "sandbox",
        )
        assert charge_line["level"] == "info"
        assert "ts" in charge_line
    access = [line for line in lines if line.get("route") == "/v1/charges" and line.get("status") == 402]
    assert access, "each request is logged once with its route template and status"


async def test_readable_lines_when_embedded(log_stream: io.StringIO) -> None:
    configure_logging(json_lines=False, stream=log_stream)
    logging.getLogger("payorch.test").info(
        "charge %s via %s with key %s", "ch_1", "sandbox", "sk_test_abcdefgh12345678"
    )
    line = log_stream.getvalue().strip()
    assert not line.startswith("{")
    assert "charge ch_1 via sandbox" in line
    assert "sk_test_abcdefgh12345678" not in line
    assert "[info" in line


async def test_a_webhook_delivery_logs_no_query_value_of_its_url(log_stream: io.StringIO, database_url: str) -> None:
    # httpx logs each request at INFO ("HTTP Request: POST <url> ..."); receivers put secrets in
    # the query string and in long path segments.
    configure_logging(json_lines=True, stream=log_stream)
    token, shop, path_secret = "qv" + secrets.token_hex(12), "shop" + secrets.token_hex(4), secrets.token_urlsafe(24)
    with MerchantEndpoint(path=f"/hooks/{path_secret}?token={token}&shop={shop}") as endpoint:
        async with webhook_runtime(database_url) as (runtime, client):
            merchant = await create_merchant(runtime)
            subscription = {"url": endpoint.url, "enabled_events": ["charge.succeeded"]}
            subscribed = await client.post("/v1/webhook_endpoints", json=subscription, headers=merchant.headers)
            assert subscribed.status_code == 201, subscribed.text
            charge = (await post_charge(client, merchant, charge_body())).json()
            await deliver_until(runtime, endpoint, lambda arrival: charge["id"].encode() in arrival.body)

    output = log_stream.getvalue()
    for secret in (token, shop, path_secret):
        assert secret not in output
    delivered = f"HTTP Request: POST http://127.0.0.1:{endpoint.port}/"
    sent = [str(line["event"]) for line in _lines(log_stream) if str(line["event"]).startswith(delivered)]
    assert sent, "httpx logged the delivery"
    for event in sent:
        assert event.startswith(f"{delivered}hooks/[REDACTED]?token=[REDACTED]&shop=[REDACTED] "), event
