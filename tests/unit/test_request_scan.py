"""The request guard reads a request as the app does (``payorch.security.request_scan``): the JSON
body through ``json.loads``'s own decoding, the query string through Starlette's split, and every
card number of every network, however it is written, is refused; ids that are not cards pass."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.pan_samples import network_card, with_check_digit

from payorch.security.card_networks import NETWORKS
from payorch.security.pan import is_card_number
from payorch.security.request_scan import (
    SINGLE_VALUED_HEADERS,
    Finding,
    _Number,
    _Pairs,
    decode_json,
    parse_json,
    repeated_header,
    scan_query,
    scan_request,
)

VISA = "4242424242424242"
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scan_body(body: bytes, content_type: str = "application/json") -> Finding | None:
    return scan_request(
        path="/v1/charges", query=b"", idempotency_key=None, content_type=content_type, body=body, max_depth=16
    ).finding


def plain(value: Any) -> Any:
    """The scanner's view of a document as ``json.loads`` builds it: last duplicate key wins."""
    if isinstance(value, _Pairs):
        return {key: plain(item) for key, item in value}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, _Number):
        return json.loads(value)
    return value


documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(documents, st.sampled_from(ENCODINGS), st.booleans())
def test_the_scan_parses_what_json_loads_parses(document: Any, encoding: str, ascii_only: bool) -> None:
    body = json.dumps(document, ensure_ascii=ascii_only).encode(encoding, "surrogatepass")
    assert plain(parse_json(decode_json(body))) == json.loads(body)
    scan = scan_request(
        path="/", query=b"", idempotency_key=None, content_type="application/json", body=body, max_depth=64
    )
    if scan.finding is None:
        # The app is handed the same text, in UTF-8.
        assert json.loads(scan.body) == json.loads(body)
        scan.body.decode("utf-8")


@SETTINGS
@given(
    st.binary(max_size=40) | st.sampled_from([b"\xff\xfe{\x00", b'"\xed\xa0\x80"', b"\xef\xbb\xbf[1]", b"\x00\x00\x00"])
)
def test_the_scan_fails_to_read_exactly_what_json_loads_fails_to_read(body: bytes) -> None:
    try:
        expected: Any = json.loads(body)
    except ValueError as error:
        expected = type(error)
    try:
        got: Any = plain(parse_json(decode_json(body)))
    except ValueError as error:
        got = type(error)
    assert repr(got) == repr(expected)  # repr: NaN is not equal to itself


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("where", ["value", "key", "number", "escaped"])
def test_a_card_in_any_encoding_is_refused(encoding: str, where: str) -> None:
    documents = {
        "value": {"metadata": {"note": f"card {VISA}"}},
        "key": {"metadata": {VISA: "x"}},
        "number": {"amount": int(VISA)},
    }
    text = '{"description": "\\u0034\\u0032' + VISA[2:] + '"}' if where == "escaped" else json.dumps(documents[where])
    finding = scan_body(text.encode(encoding))
    assert finding is not None
    assert finding.kind == "card_number"
    assert finding.param == {"value": "metadata.note", "key": "metadata.424242******4242"}.get(
        where, "amount" if where == "number" else "description"
    )


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-be", "utf-8-sig"])
def test_nul_and_lone_surrogates_are_refused_in_any_encoding(encoding: str) -> None:
    for text, param in (('{"d": "a\\u0000b"}', "d"), ('{"\\ud800": 1}', "?")):
        finding = scan_body(text.encode(encoding))
        assert finding == Finding("bad_text", param)


@pytest.mark.parametrize("body", [b'{"a": "\xff"}', b"\xff\xfe{", b'{"a": "\xc3"}', b"\xfe\xff\x00{\x00"])
def test_a_body_that_does_not_decode_is_refused(body: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        json.loads(body)
    assert scan_body(body) == Finding("undecodable", None)


@pytest.mark.parametrize(
    "literal",
    [
        "4242424242424242",
        "-4242424242424242",
        "4.242424242424242e15",
        "4242424242424242e0",
        "6.304e15",
        "5.1051051051051e15",
    ],
)
def test_a_number_is_read_as_written_and_as_its_value(literal: str) -> None:
    # 6304000000000000 is Braintree's Maestro test card; 5105105105105100 Stripe's prepaid Mastercard.
    assert scan_body(b'{"amount": ' + literal.encode() + b"}") == Finding("card_number", "amount")


@pytest.mark.parametrize(
    "query",
    [
        f"q={VISA}",
        "q=4242+4242+4242+4242",
        "q=4242%204242%204242%204242",
        "q=%34%32%34%32%34%32%34%32%34%32%34%32%34%32%34%32",
        "q=" + "%EF%BC%94%EF%BC%92" * 8,  # full-width digits, UTF-8 percent-encoded
        "q=4242.4242/4242_4242",
        f"q=ok&q=fine&q={VISA}",
        f"{VISA}=1",
        f"a=1&&{VISA}",
    ],
)
def test_a_card_anywhere_in_the_query_is_refused(query: str) -> None:
    finding = scan_query(query.encode())
    assert finding is not None
    assert finding.kind == "card_number"


def test_single_valued_headers_may_come_once() -> None:
    assert repeated_header([(b"idempotency-key", b"a"), (b"accept", b"x"), (b"accept", b"y")]) is None
    assert repeated_header([(b"idempotency-key", b"a"), (b"Idempotency-Key", b"b")]) == "Idempotency-Key"
    for name, shown in SINGLE_VALUED_HEADERS.items():
        assert repeated_header([(name, b"1"), (b"x-other", b""), (name, b"1")]) == shown
    assert repeated_header([(b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")]) is None


# -- every network, any writing -----------------------------------------------------------------------

DIGIT_ZEROS = ["0", "0", "0", "\uff10", "\u0660", "\u06f0", "\u0966", "\u0e50", "\U0001d7ce"]
SEPARATORS = [
    "", "", " ", "-", ".", "/", "_", " - ", "\t", "\u00a0", "\u2009", "\u3000",  # spaces
    "\u2013", "\u2014", "\u2212", "\u200b", "\u2060", "\ufeff", "\u00ad",  # dashes, zero-width, format
]  # fmt: skip


@st.composite
def written_cards(draw: st.DrawFn) -> tuple[str, str]:
    """(digits, text): a card of a random network, in random digit scripts, groups and separators,
    glued to letters on one side at most."""
    network = draw(st.sampled_from(NETWORKS))
    digits = network_card(random.Random(draw(st.integers(0, 2**32))), network)
    parts: list[str] = []
    i = 0
    while i < len(digits):
        size = draw(st.integers(1, 6))
        if parts:
            parts.append(draw(st.sampled_from(SEPARATORS)))
        zero = draw(st.sampled_from(DIGIT_ZEROS))
        parts.append("".join(chr(ord(zero) + int(d)) for d in digits[i : i + size]))
        i += size
    before, after = draw(st.sampled_from([("", ""), ("card ", " ok"), ("ORD", ""), ("", "exp"), ("pan=", ";")]))
    return digits, before + "".join(parts) + after


@SETTINGS
@given(written_cards(), st.sampled_from(ENCODINGS))
def test_every_network_is_refused_however_written(card: tuple[str, str], encoding: str) -> None:
    digits, text = card
    assert is_card_number(digits)
    body = json.dumps({"amount": 100, "metadata": {"note": text}}).encode(encoding)
    assert scan_body(body) == Finding("card_number", "metadata.note")
    from urllib.parse import quote_plus

    assert scan_query(f"ending_before={quote_plus(text)}".encode()) == Finding("card_number", "ending_before")
    key = scan_request(path="/", query=b"", idempotency_key=text, content_type="", body=b"", max_depth=16)
    assert key.finding == Finding("card_number", "Idempotency-Key")


@st.composite
def non_card_ids(draw: st.DrawFn) -> str:
    """A 13-19 digit id that no network issues or that fails Luhn, maybe with a letter prefix."""
    length = draw(st.integers(13, 19))
    number = str(draw(st.integers(10 ** (length - 1), 10**length - 1)))
    if is_card_number(number):
        number = number[:-1] + str((int(number[-1]) + 1) % 10)  # now it fails Luhn
    zero = draw(st.sampled_from(DIGIT_ZEROS))
    return draw(st.sampled_from(["", "ORD", "id-", "#"])) + "".join(chr(ord(zero) + int(d)) for d in number)


@SETTINGS
@given(non_card_ids(), st.sampled_from(ENCODINGS))
def test_ids_that_are_not_cards_pass(identifier: str, encoding: str) -> None:
    body = json.dumps({"amount": 100, "metadata": {"order": identifier}, "description": identifier}).encode(encoding)
    assert scan_body(body) is None
    scan = scan_request(path="/", query=b"", idempotency_key=identifier, content_type="", body=b"", max_depth=16)
    assert scan.finding is None


def test_a_luhn_valid_number_no_network_issues_passes() -> None:
    for body in ("7" * 15, "88" * 7, "9" * 15, "1" * 17, "37" * 7 + "1"):
        number = with_check_digit(body)
        assert scan_body(json.dumps({"metadata": {"n": number}}).encode()) is None


@pytest.mark.parametrize(
    "document",
    [
        {"metadata": {"4242": "4242 4242 4242"}},
        {"metadata": {"a": "x", "4242 4242": "4242", "4242": "x"}},
        {"cards": [4242, 4242, 4242, 4242]},
        {"n": ["4242", "4242", "42424242"]},
    ],
)
def test_a_card_split_across_keys_and_values_is_refused(document: dict[str, Any]) -> None:
    # Each piece is harmless; the stored JSON, read as text, holds 4242 4242 4242 4242.
    assert scan_body(json.dumps(document).encode()) == Finding("card_number", None)
