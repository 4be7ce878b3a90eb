"""Secret hygiene over a full end-to-end run of the served process: charges on every kind of gateway
(sandbox and the Stripe, Braintree and Adyen fakes), declines, refunds, payment methods, webhook
endpoints and their secrets, a bank link through the OAuth provider, key creation, and errors of every
kind. Every log line the process wrote, every error body and the /metrics page are then searched:
no API key, gateway credential, webhook secret, OAuth secret or token, or card number may appear."""

from __future__ import annotations

import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import structlog
from cryptography.fernet import Fernet
from tests.conftest import make_settings
from tests.factories import create_merchant
from tests.fakes.oauth_provider import REDIRECT_URI, FakeOAuthProvider, banking_settings
from tests.integration.orchestration_support import Fakes, charge_body, gateway_configs, running_fakes
from tests.integration.served_payorch import Served, serve

from payorch.app import create_app
from payorch.observability.logging import configure_logging, get_logger
from payorch.runtime import Runtime

pytestmark = pytest.mark.e2e

CARDS = ("4242424242424242", "4000 0566 5566 5556", "5555-5555-5555-4444", "378282246310005")


@dataclass
class Run:
    """What the run produced: the texts to search, and the secrets that must not be in them."""

    secrets: dict[str, str] = field(default_factory=dict)
    error_bodies: list[str] = field(default_factory=list)
    metrics: str = ""
    log: str = ""

    def keep(self, name: str, value: str) -> None:
        assert value, name
        self.secrets[name] = value

    def answered(self, response: httpx.Response, *expected: int) -> httpx.Response:
        assert response.status_code in expected, (response.status_code, response.text)
        if response.status_code >= 400:
            self.error_bodies.append(response.text)
        return response


def _cli(database_url: str, tmp_path: Path, *args: str) -> str:
    payorch = Path(sys.executable).with_name("payorch")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PAYORCH_DATABASE_URL": database_url}
    done = subprocess.run(
        [str(payorch), *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOAuthProvider]:
    fake = FakeOAuthProvider()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    with running_fakes() as running:
        yield running


@pytest.fixture(scope="module")
def run(
    database_url: str,
    provider: FakeOAuthProvider,
    fakes: Fakes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    tmp_path = tmp_path_factory.mktemp("secret-hygiene")
    result = Run()
    # Keys made the way an operator makes them: the CLI prints each once, and only there.
    merchant_id = _cli(database_url, tmp_path, "merchants", "create", "--name", "Hygiene")
    _key_id, test_key = _cli(database_url, tmp_path, "keys", "create", "--merchant", merchant_id).split()
    live_key = _cli(database_url, tmp_path, "keys", "create", "--merchant", merchant_id, "--mode", "live").split()[1]
    result.keep("test key", test_key)
    result.keep("live key", live_key)
    result.keep("stripe api key", fakes.stripe.api_key)
    result.keep("braintree private key", fakes.braintree.private_key)
    result.keep("adyen api key", fakes.adyen.api_key)
    result.keep("oauth client secret", provider.client_secret)
    webhook_key = Fernet.generate_key().decode()
    result.keep("webhook secret key", webhook_key)
    gateways = [
        {"name": "sandbox", "kind": "sandbox"},
        *gateway_configs(fakes, stripe_ms=3000, others_ms=5000),
    ]
    banking = banking_settings(provider, secrets_config={"local_directory": str(tmp_path / "bank-secrets")})
    env = {
        "PAYORCH_LOG_JSON": "true",
        "PAYORCH_RUN_BACKGROUND_IN_API": "true",
        "PAYORCH_GATEWAYS": json.dumps(gateways),
        "PAYORCH_BANKING": json.dumps(banking),
        "PAYORCH_WEBHOOKS__POLL_INTERVAL_SECONDS": "0.2",
        "PAYORCH_WEBHOOKS__SECRET_KEY": webhook_key,
        "PAYORCH_WEBHOOKS__ALLOW_LOOPBACK_ENDPOINTS": "true",  # the endpoint below is on loopback
        "PAYORCH_DATA_DIR": str(tmp_path / "data"),
    }
    with serve(database_url, tmp_path, env) as served:
        _exercise(served, result, test_key, live_key, provider)
    result.log = served.log()
    assert '"level": "info"' in result.log or '"level":"info"' in result.log, "the process wrote no log lines"
    result.keep("oauth access token", provider.issued_access_tokens[-1])
    result.keep("oauth refresh token", provider.issued_refresh_tokens[-1])
    return result


def _exercise(served: Served, result: Run, test_key: str, live_key: str, provider: FakeOAuthProvider) -> None:
    auth = {"Authorization": f"Bearer {test_key}"}
    with httpx.Client(base_url=served.url, timeout=30) as http:
        # Charges on every gateway, a decline, a refund, a payment method, a capture.
        sandbox = {"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}}
        charged = result.answered(http.post("/v1/charges", json=sandbox, headers=auth), 201).json()
        declined = {**sandbox, "payment_method": {"tokens": {"sandbox": "tok_chargeDeclined"}}}
        result.answered(http.post("/v1/charges", json=declined, headers=auth), 402)
        for only in ("stripe", "braintree", "adyen"):
            body = charge_body(**{g: None for g in ("stripe", "braintree", "adyen") if g != only})
            result.answered(http.post("/v1/charges", json=body, headers=auth), 201)
        result.answered(http.post("/v1/refunds", json={"charge": charged["id"], "amount": 50}, headers=auth), 201)
        pm = {"tokens": {"sandbox": "tok_visa"}}
        result.answered(http.post("/v1/payment_methods", json=pm, headers=auth), 201)
        held = result.answered(http.post("/v1/charges", json={**sandbox, "capture": False}, headers=auth), 201).json()
        result.answered(http.post(f"/v1/charges/{held['id']}/capture", json={}, headers=auth), 200)
        live = {"Authorization": f"Bearer {live_key}"}
        result.answered(http.post("/v1/charges", json=sandbox, headers=live), 201)

        # Webhook endpoint secrets: shown at creation and rotation, nowhere else.
        hook = {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]}
        endpoint = result.answered(http.post("/v1/webhook_endpoints", json=hook, headers=auth), 201).json()
        result.keep("webhook secret", endpoint["secret"])
        rotated = http.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", json={}, headers=auth)
        result.keep("rotated webhook secret", result.answered(rotated, 200).json()["secret"])
        result.answered(http.post("/v1/charges", json=sandbox, headers=auth), 201)  # an event to deliver

        # A bank link through the OAuth provider: the callback exchanges the code for tokens.
        link = result.answered(http.post("/v1/bank_links", json={"user_reference": "u-1"}, headers=auth), 201).json()
        location = _run(provider.consent(link["authorize_url"]))
        query = parse_qs(urlsplit(location).query)
        result.keep("oauth code", query["code"][0])
        callback = http.get(location.replace(REDIRECT_URI, f"{served.url}/v1/bank_links/callback"))
        result.answered(callback, 303)
        result.answered(http.get(f"/v1/bank_links/{link['id']}", headers=auth), 200)

        # Errors of every kind, several carrying a secret or a card where none belongs.
        wrong_key = "sk_live_" + secrets.token_urlsafe(33)
        result.keep("wrong key", wrong_key)
        result.answered(http.get("/v1/charges", headers={"Authorization": f"Bearer {wrong_key}"}), 401)
        result.answered(http.get("/v1/charges", headers={"Authorization": f"Basic {wrong_key}"}), 401)
        result.answered(http.get("/v1/charges"), 401)
        for card in CARDS:
            body = {**sandbox, "metadata": {"note": f"card {card}"}}
            result.answered(http.post("/v1/charges", json=body, headers=auth), 400)
            result.answered(http.get("/v1/charges", params={"starting_after": card}, headers=auth), 400)
        result.answered(http.post("/v1/charges", json={**sandbox, "description": CARDS[0]}, headers=auth), 400)
        result.answered(http.post("/v1/charges", json={**sandbox, test_key: "x"}, headers=auth), 400)
        result.answered(http.post("/v1/charges", json={**sandbox, "amount": test_key}, headers=auth), 400)
        result.answered(http.post("/v1/charges", json={**sandbox, "currency": live_key[:3]}, headers=auth), 400)
        result.answered(http.get(f"/v1/charges/{test_key}", headers=auth), 404)
        result.answered(http.get(f"/v1/charges?key={test_key}", headers=auth), 400)
        broken = b'{"amount": 1, "api_key": "' + test_key.encode() + b'"'
        result.answered(
            http.post("/v1/charges", content=broken, headers={**auth, "Content-Type": "application/json"}), 400
        )
        result.answered(http.post("/v1/charges", content=b"{" + b" " * 70_000 + b"}", headers=auth), 413)
        result.answered(http.get(f"/v1/bank_links/callback?state={test_key}&code=zzz"), 400, 404, 410)
        result.answered(http.post("/v1/gateway_webhooks/stripe", json={"key": test_key}, headers=auth), 400, 401)

        result.metrics = http.get("/metrics").text
        assert "# TYPE" in result.metrics


def _run(coroutine):  # type: ignore[no-untyped-def]
    import asyncio

    return asyncio.run(coroutine)


def _flat(text: str) -> str:
    return text.replace(" ", "").replace("-", "")


def _places(run: Run) -> dict[str, str]:
    return {"log": run.log, "error bodies": "\n".join(run.error_bodies), "metrics": run.metrics}


@pytest.mark.parametrize("place", ["log", "error bodies", "metrics"])
def test_no_secret_anywhere(run: Run, place: str) -> None:
    text = _places(run)[place]
    leaked = sorted(name for name, value in run.secrets.items() if value in text)
    assert not leaked, f"{place} holds: {leaked}"


@pytest.mark.parametrize("place", ["log", "error bodies", "metrics"])
def test_no_card_number_anywhere(run: Run, place: str) -> None:
    text = _places(run)[place]
    for card in CARDS:
        assert card not in text, place
        assert _flat(card) not in _flat(text), place


def test_the_log_still_says_what_happened(run: Run) -> None:
    """Redaction keeps the lines useful: each refusal is logged with where the card number was."""
    lines = [json.loads(line) for line in run.log.splitlines() if line.startswith("{")]
    refusals = [str(line["event"]) for line in lines if "card_number in" in str(line.get("event", ""))]
    assert any(r.endswith("card_number in metadata.note") for r in refusals)
    assert any(r.endswith("card_number in starting_after") for r in refusals)


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(json_lines=True, stream=stream)
    yield stream
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    structlog.reset_defaults()


def test_a_log_line_that_carries_a_card_number_is_masked(log_stream: io.StringIO) -> None:
    """Defence in depth: if a card number ever reaches a logger, in the message, its arguments, an
    extra field or an exception, the line shows only the BIN and last four."""
    card, spaced = "4242424242424242", "5555 5555 5555 4444"
    logging.getLogger("payorch.test").warning("card %s in args", card, extra={"note": f"pan {spaced}"})
    logging.getLogger("botocore.thirdparty").warning(f"GET /v1/charges?starting_after={card} 400")
    try:
        raise ValueError(f"bad card {spaced}")
    except ValueError:
        logging.getLogger("payorch.test").exception("failed")
    get_logger("payorch.test").info("structlog", card=card, nested={"deep": [spaced]})
    text = log_stream.getvalue()
    assert len(text.splitlines()) == 4
    assert card not in text
    assert _flat(spaced) not in _flat(text)
    assert text.count("424242******4242") >= 3
    assert text.count("555555******4444") >= 3


# --- in process: every log record, before any redaction -----------------------------------------


@pytest.fixture(scope="module")
async def inproc(
    database_url: str, provider: FakeOAuthProvider, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    data_dir = tmp_path_factory.mktemp("hygiene-inproc")
    settings = make_settings(
        database_url,
        data_dir=str(data_dir),
        gateways=[{"name": "sandbox", "kind": "sandbox"}, *gateway_configs(fakes, stripe_ms=3000, others_ms=5000)],
        banking=banking_settings(provider, secrets_config={"local_directory": str(data_dir / "secrets")}),
        webhooks={"allow_loopback_endpoints": True},  # the endpoint it registers is on loopback
    )
    built = await Runtime.build(settings, database_url)
    app = create_app(settings, runtime=built)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://payorch.test") as http:
        yield http, built
    await built.aclose()


async def test_no_log_record_carries_a_secret_even_before_redaction(
    inproc: tuple[httpx.AsyncClient, Runtime],
    provider: FakeOAuthProvider,
    fakes: Fakes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redaction is the last line: no code path may hand a logger a secret in the first place. Every
    record at DEBUG, from every logger, is checked raw (message, arguments, extra fields, traceback)."""
    http, runtime = inproc
    merchant = await create_merchant(runtime, "Hygiene in process")
    caplog.set_level(logging.DEBUG)
    auth = merchant.headers
    sandbox = {"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}}
    secrets_seen = {"test key": merchant.key, "live key": merchant.live_key}
    secrets_seen |= {"stripe": fakes.stripe.api_key, "braintree": fakes.braintree.private_key}
    secrets_seen |= {"adyen": fakes.adyen.api_key, "oauth client": provider.client_secret}

    charged = (await http.post("/v1/charges", json=sandbox, headers=auth)).json()
    for only in ("stripe", "braintree", "adyen"):
        body = charge_body(**{g: None for g in ("stripe", "braintree", "adyen") if g != only})
        assert (await http.post("/v1/charges", json=body, headers=auth)).status_code == 201
    await http.post("/v1/refunds", json={"charge": charged["id"], "amount": 10}, headers=auth)
    await http.post("/v1/charges", json={**sandbox, "payment_method": {"tokens": {"sandbox": "tok_chargeDeclined"}}})
    hook = {"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]}
    endpoint = (await http.post("/v1/webhook_endpoints", json=hook, headers=auth)).json()
    secrets_seen["webhook secret"] = endpoint["secret"]
    rotated = await http.post(f"/v1/webhook_endpoints/{endpoint['id']}/rotate_secret", json={}, headers=auth)
    secrets_seen["rotated webhook secret"] = rotated.json()["secret"]
    link = (await http.post("/v1/bank_links", json={"user_reference": "u-2"}, headers=auth)).json()
    location = await provider.consent(link["authorize_url"])
    assert (await http.get(location.removeprefix("http://payorch.test"))).status_code == 303
    secrets_seen["oauth access token"] = provider.issued_access_tokens[-1]
    secrets_seen["oauth refresh token"] = provider.issued_refresh_tokens[-1]
    wrong = "sk_test_" + secrets.token_urlsafe(33)
    secrets_seen["wrong key"] = wrong
    assert (await http.get("/v1/charges", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
    assert (await http.post("/v1/charges", json={**sandbox, merchant.key: 1}, headers=auth)).status_code == 400

    assert caplog.records, "nothing was logged"
    leaked: list[str] = []
    for record in caplog.records:
        raw = f"{record.msg} {record.args!r} {record.__dict__!r} {record.exc_text or ''}"
        leaked += [f"{name} in {record.name}: {record.msg!r}" for name, value in secrets_seen.items() if value in raw]
    assert not leaked, leaked
