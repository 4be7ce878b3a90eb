"""The redaction pre-screen changes no result: ``redact_text`` (pre-screen, then the full pipeline
only when needed) equals ``_redact_text_full`` (every pattern on every string), and ``redact`` with
its key memo equals the walk it replaced."""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payorch.audit import redaction
from payorch.audit.redaction import (
    _KEY_MEMO,
    _MAX_DEPTH,
    REDACTED,
    _may_need_masking,
    _redact_text_full,
    is_secret_key,
    redact,
    redact_text,
)
from payorch.security.pan import find_pans, luhn_valid, mask_pans, may_contain_pan

SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The formats the module docstring lists, and near misses of each (too short, wrong case, no separator).
FRAGMENTS = [
    "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "rk_live_abcdef0123456789",
    "rk_test_",
    "sk_live_",
    "xsk_live_abc",
    "sk_prod_abc",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_",
    "whsec",
    "Bearer abc.def-ghi_jkl~mno",
    "bearer abcdefgh",
    "BEARER abcdefghij==",
    "BeArEr\tabcdefgh1234",
    "Bearer short",
    "Bearer",
    "Basic dXNlcjpwYXNzd29yZA==",
    "Basic abcdefgh",
    "Basic abcdefg1",
    "basic dXNlcjpwYXNz",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "eyJa.b.",
    "eyJa.b",
    "eyJ",
    "AKIAIOSFODNN7EXAMPLE",
    "ASIAIOSFODNN7EXAMPL",
    "AIDA0123456789ABCDEF",
    "AROAXXXXXXXXXXXXXXXX1",
    "akiaiosfodnn7example",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE",
    "da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
    "-----BEGIN PRIVATE KEY-----\nMIIE",
    "-----BEGIN PUBLIC KEY-----",
    "PRIVATE KEY",
    "ch_01HZX3K4M5N6P7Q8R9S0T1V2W3",
    "ch_01m8h6kscjw9q1tp09gqd2fh43",
    "2024-01-15T12:30:45.123456Z",
    "+1 (415) 555-0100",
    "203.0.113.7",
    "success",
    "charge.created",
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",
    "é",
    "İ",
    "K",
    " ",
    "-",
    "_",
    "/",
    "+",
    "=",
    "\n",
]

BASE64 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/+"
# First digits the PAN rule treats differently: networks (2-6), UATP (1), RuPay (81, 82), Troy
# (9792), and ones no network uses.
CARD_PREFIXES = ["4", "5", "2", "37", "6011", "3", "1", "81", "82", "80", "9792", "9", "0", "7"]
SEPARATORS = ["", "", "", " ", "-", "  ", "--", " -", "_", ".", "/", "\t"]


def with_check_digit(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """Luhn-valid digit strings of 11 to 21 digits, written in groups with assorted separators."""
    prefix = draw(st.sampled_from(CARD_PREFIXES))
    length = draw(st.integers(min_value=11, max_value=21))
    body = (prefix + draw(st.text("0123456789", min_size=length, max_size=length)))[: length - 1]
    digits = with_check_digit(body)
    parts: list[str] = []
    i = 0
    while i < len(digits):
        size = draw(st.integers(min_value=1, max_value=8))
        if parts:
            parts.append(draw(st.sampled_from(SEPARATORS)))
        parts.append(digits[i : i + size])
        i += size
    return "".join(parts)


pieces = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(max_size=12),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
    st.text("0123456789 -", min_size=1, max_size=24),
    card_numbers(),
    st.text(BASE64, min_size=30, max_size=50),
    st.text(BASE64 + "=._-~", min_size=1, max_size=14),
    st.sampled_from(["\x00", "\ud800", "\udc00", "\ud7ff", "\ue000"]),
)
texts = st.lists(pieces, max_size=8).map("".join)


@SETTINGS
@given(texts)
def test_redact_text_equals_the_full_pipeline(text: str) -> None:
    fast = redact_text(text)
    assert fast == _redact_text_full(text)
    assert type(fast) is str
    if not may_contain_pan(text):  # the card-number part of the pre-screen, on its own
        assert find_pans(text) == []
        assert mask_pans(text) == text


@settings(max_examples=200, deadline=None)
@given(texts)
def test_str_subclasses_equal_the_full_pipeline(text: str) -> None:
    class Text(str):
        pass

    assert redact_text(Text(text)) == _redact_text_full(Text(text))
    assert type(redact_text(Text(text))) is str


def old_redact(value: Any, depth: int = 0) -> Any:
    """The walk as it was before the key memo and exact-type dispatch, for the JSON types."""
    if depth > _MAX_DEPTH:
        return "[REDACTED: nested too deep]"
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _redact_text_full(value)
    if isinstance(value, int):
        return redaction._redact_int(value)
    if isinstance(value, float):
        return redaction._redact_float(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _redact_text_full(key if isinstance(key, str) else str(key))
            if isinstance(key, str) and is_secret_key(key) and item is not None:
                out[name] = REDACTED
            else:
                out[name] = old_redact(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [old_redact(item, depth + 1) for item in value]
    raise TypeError(type(value))


KEYS = ["amount", "merchant_id", "api_key_id", "cvc", "Card-Number", "password", "token_type", "x-api-key"]
keys = st.one_of(st.sampled_from(KEYS), texts, st.integers(min_value=-(10**20), max_value=10**20))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    texts,
    st.integers(),
    card_numbers().map(lambda s: int("".join(c for c in s if c.isdigit()))),
    st.floats(),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)),
    max_leaves=15,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_redact_equals_the_old_walk(document: Any) -> None:
    expected = old_redact(document)
    assert redact(document) == expected
    assert redact(document) == expected  # again, now that the key memo holds its keys


def test_depth_limit_is_unchanged() -> None:
    deep: Any = {"cvc": "123", "none": None, "text": "sk_live_abcdefgh", "card": 4242424242424242}
    for _ in range(_MAX_DEPTH + 3):
        deep = {"n": deep, "cvc": "123", "none": None, "s": "ok", "pan": [4242424242424242]}
    assert redact(deep) == old_redact(deep)


def test_key_memo_keeps_no_secret_bearing_key() -> None:
    redact({"4242424242424242": 1, "note sk_live_abcdefghijkl": 2, "a\x00b": 3, "merchant_id": 4})
    assert "merchant_id" in _KEY_MEMO
    for key in ("4242424242424242", "note sk_live_abcdefghijkl", "a\x00b"):
        assert key not in _KEY_MEMO


def test_key_memo_stays_bounded() -> None:
    for i in range(redaction._KEY_MEMO_SIZE + 10):
        redact({f"field_{i}": i})
    assert len(_KEY_MEMO) <= redaction._KEY_MEMO_SIZE
    assert redact({"cvc": "1", "merchant_id": "m"}) == {"cvc": REDACTED, "merchant_id": "m"}


@pytest.mark.parametrize(
    "text",
    [
        "success",
        "charge.created",
        "charge_attempt",
        "usd",
        "sandbox",
        "ch_01m8h6kscjw9q1tp09gqd2fh43",
        "req_01m8h6kscj5asf4y3wm0jwjar3",
        "aud_01M8H6KSCJZWRP46ENRQ6QFZJQ",
        "a1b2c3d4-e5f6-4789-abcd-0123456789ab",
        "203.0.113.7",
        "2024-01-15T12:30:45.123456Z",
        "Order 1042 for Jane",
    ],
)
def test_ordinary_values_take_the_fast_path(text: str) -> None:
    assert not _may_need_masking(text)
    assert redact_text(text) == text


@pytest.mark.parametrize("fragment", [f for f in FRAGMENTS if _redact_text_full(f) != f and len(f) > 1])
def test_every_masked_format_is_sent_to_the_full_pipeline(fragment: str) -> None:
    assert _may_need_masking(fragment)
