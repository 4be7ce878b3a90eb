import datetime as dt
import json

import pytest
import structlog
from pydantic import SecretStr

from payorch.audit.redaction import REDACTED, is_secret_key, redact, redact_log_event, redact_text
from payorch.security.pan import contains_pan

# Every string below must never survive redaction, wherever it is put.
SECRETS = [
    "4242424242424242",
    "4242 4242 4242 4242",
    "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_abcdef0123456789",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "Bearer abc.def-ghi_jkl~mno",
]


def flatten(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def assert_clean(value) -> None:
    text = flatten(value)
    for secret in SECRETS:
        assert secret not in text
    assert "4242424242424242" not in text.replace(" ", "").replace("-", "")
    assert not contains_pan(text)


@pytest.mark.parametrize("secret", SECRETS)
def test_secret_in_free_text_is_masked(secret):
    out = redact({"description": f"customer wrote: {secret} (sorry)", "metadata": {"note": [f"x {secret}"]}})
    assert_clean(out)
    assert out["description"].startswith("customer wrote: ")


@pytest.mark.parametrize(
    "key",
    [
        "cvc", "CVV", "card_number", "cardNumber", "number", "password", "secret", "token", "api_key",
        "Authorization", "refresh_token", "access_token", "client_secret", "private_key", "x-api-key",
        "stripe_secret_key", "gateway_token", "webhook_secret", "code_verifier",
    ],
)  # fmt: skip
def test_secret_keys_are_dropped_whatever_the_value(key):
    out = redact({key: {"nested": "anything"}, "outer": {key: 123}})
    assert out[key] == REDACTED
    assert out["outer"][key] == REDACTED


@pytest.mark.parametrize("key", ["api_key_id", "merchant_id", "request_id", "amount", "token_type", "key"])
def test_ordinary_keys_are_kept(key):
    assert not is_secret_key(key)
    assert redact({key: "value"}) == {key: "value"}


def test_adversarial_shapes():
    nested: dict = {"a": "4242424242424242"}
    for _ in range(50):
        nested = {"n": nested}
    payload = {
        "4242424242424242": "pan as a key",
        "as_int": 4242424242424242,
        "as_float": 4242424242424242.0,
        "in_tuple": ("x", "5555 5555 5555 4444"),
        "in_set": {"378282246310005"},
        "bytes": b"card 4242424242424242",
        "secret_str": SecretStr("hunter2hunter2"),
        "dt": dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        "nan": float("nan"),
        "nul": "a\x00b",
        "surrogate": "bad \ud800 text",
        "deep": nested,
        "headers": {"Authorization": "Bearer sk_live_zzzzzzzzzzzz", "Cookie": "session=abc"},
        "mixed": f"{SECRETS[2]} and {SECRETS[5]} and card 4242-4242-4242-4242",
    }
    out = redact(payload)
    assert_clean(out)
    json.dumps(out, allow_nan=False).encode("utf-8")  # storable as jsonb
    assert out["as_int"] == "424242******4242"
    assert out["secret_str"] == REDACTED
    assert out["nul"] == "a\ufffdb"
    assert "hunter2" not in flatten(out)


def test_ordinary_values_survive_unchanged():
    payload = {
        "amount": 1999,
        "currency": "usd",
        "charge": "ch_01HZX3K4M5N6P7Q8R9S0T1V2W3",
        "created": 1_700_000_000_123,
        "description": "Basic information about order 42",
        "sha1": "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "when": "2024-01-15T12:30:45Z",
        "ip": "203.0.113.7",
    }
    assert redact(payload) == payload


def test_key_formats_keep_their_prefix_for_debugging():
    assert redact_text("key sk_live_abcdefghijkl used") == f"key sk_live_{REDACTED} used"
    assert redact_text("Authorization: Bearer abcdefghijkl") == f"Authorization: Bearer {REDACTED}"


def test_structlog_processor_shares_the_function():
    captured: list[dict] = []

    def capture(_logger, _method, event_dict):
        captured.append(dict(event_dict))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(structlog.PrintLogger(), processors=[redact_log_event, capture], context_class=dict)
    logger.info("charge with 4242424242424242", api_key="sk_live_abcdefghijklmnop", body={"cvc": "123"})
    assert captured
    event = captured[0]
    assert_clean(event)
    assert event["api_key"] == REDACTED
    assert event["body"] == {"cvc": REDACTED}
    assert event["event"] == "charge with 424242******4242"
