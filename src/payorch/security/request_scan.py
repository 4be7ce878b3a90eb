"""Hostile-input checks run once per request, before anything is parsed by the app, logged, stored,
audited or fingerprinted for idempotency (DESIGN.md section 11).

The rule is that the scan reads a request exactly as the app will:

- a JSON body is decoded and parsed by the standard library's ``json.loads`` on the raw bytes, the
  very call Starlette's ``Request.json()`` makes (UTF-8, or UTF-16/UTF-32 recognised by a BOM or by
  the zero bytes of the first characters, RFC 8259/4627), and then handed to the app as the same
  text in UTF-8 (``Scan.body``), so no later parser can read other characters out of it. A body
  that does not decode is refused; one that decodes but is not JSON is searched as text (the app
  refuses it as ``invalid_json``, but a card number in it must not reach a log first);
- every key and every value of the parsed document is searched, at any depth, and then the text
  as a whole (a card split across keys and values would show in the stored JSON); a number is searched
  as written (``4242424242424242`` sent as a number) and as the value the app would hold
  (``6.304e15`` is 6304000000000000); every object is kept as its list of pairs, so a card number in
  a duplicated key, which the parser drops, is still seen;
- the query string is split and percent/plus-decoded as Starlette's ``QueryParams`` does, every
  name and value of every repeated parameter; the path is the decoded path the router matches;
- the headers payorch reads once must come once (``repeated_header``), and ``Idempotency-Key``,
  which is stored, is searched like a field.

The card-number rule itself is ``payorch.security.pan``. Pure functions: the ASGI middleware in
``payorch.api`` buffers the (size-capped) body, calls ``scan_request``, and replays ``Scan.body``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from payorch.security.pan import contains_pan, mask_pans

_MIN_DIGITS = 13  # the shortest card number

# A JSON string literal (escapes included), removed before brackets are counted. An unterminated one
# runs to the end of the text, so the pattern never fails and backtracks: linear on any input.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.|\\\Z)*(?:"|\Z)', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")
# A number written with an exponent may spell a long value in few digits (6.304e15).
_EXPONENT = re.compile(rb"[0-9.][eE][-+]?[0-9]")

# Headers payorch (or Starlette, for payorch) reads one value of: a second copy would be read by one
# layer and ignored by another. List-valued fields (Accept, X-Forwarded-For: resolved through the
# trusted proxies, see docs/ratelimiting.md) may repeat, as RFC 9110 allows.
SINGLE_VALUED_HEADERS: dict[bytes, str] = {
    b"authorization": "Authorization",
    b"content-length": "Content-Length",
    b"content-type": "Content-Type",
    b"host": "Host",
    b"idempotency-key": "Idempotency-Key",
    b"origin": "Origin",
    b"stripe-signature": "Stripe-Signature",
}

Kind = Literal["card_number", "too_deep", "bad_text", "undecodable"]


@dataclass(frozen=True)
class Finding:
    """What ``scan_request`` refuses: ``kind`` says why, ``param`` where (dotted path, card masked)."""

    kind: Kind
    param: str | None


@dataclass(frozen=True)
class Scan:
    """A request's verdict, and the body to hand the app (the scanned text, see the module doc)."""

    finding: Finding | None
    body: bytes


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, duplicates kept."""


class _Number(str):
    """A JSON number as written."""


_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs, parse_int=_Number, parse_float=_Number, parse_constant=_Number)


def decode_json(body: bytes) -> str:
    """The text ``json.loads(body)`` parses: its own encoding detection and error handler.
    Raises ``UnicodeDecodeError`` for a body that does not decode."""
    return body.decode(json.detect_encoding(body), "surrogatepass")


def parse_json(text: str) -> Any:
    """``json.loads`` with every object as its pairs and every number as its literal text."""
    return _DECODER.decode(text)


def repeated_header(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The name of the first single-valued header sent more than once, if any."""
    seen: set[bytes] = set()
    for raw_name, _ in headers:
        name = raw_name.lower()
        if name in SINGLE_VALUED_HEADERS:
            if name in seen:
                return SINGLE_VALUED_HEADERS[name]
            seen.add(name)
    return None


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True when arrays/objects in ``text`` nest more than ``max_depth`` levels (strings ignored)."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    depth = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth = max(depth - 1, 0)
    return False


def storable(text: str) -> bool:
    """False for text Postgres cannot store and no field needs: NUL, or a lone UTF-16 surrogate
    (``"\\ud800"`` is valid JSON but not Unicode text)."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(text: str) -> Kind | None:
    if not storable(text):
        return "bad_text"
    if contains_pan(text):
        return "card_number"
    return None


def _number_forms(literal: str) -> Iterator[str]:
    """A number as written, then as Python holds it when that reads differently (floats only:
    an integer literal is its value's digits already)."""
    yield literal
    if not any(char in literal for char in ".eE"):
        return
    try:
        value = float(literal)
    except ValueError:  # NaN, Infinity
        return
    yield repr(value)
    if math.isfinite(value) and value.is_integer():
        yield str(int(value))


def _check_number(literal: str) -> Kind | None:
    return "card_number" if any(contains_pan(form) for form in _number_forms(literal)) else None


def _walk(value: Any, path: tuple[str, ...]) -> Iterator[tuple[Kind, tuple[str, ...]]]:
    """Yield (kind, path) of every key or scalar that must be refused (depth already capped)."""
    if isinstance(value, _Pairs):
        for key, item in value:
            kind = _check(key)
            if kind is not None:
                yield kind, (*path, key)
            yield from _walk(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, (*path, str(index)))
    elif isinstance(value, _Number):
        kind = _check_number(value)
        if kind is not None:
            yield kind, path
    elif isinstance(value, str):
        kind = _check(value)
        if kind is not None:
            yield kind, path


def _param(path: tuple[str, ...]) -> str | None:
    # The path may itself end in the offending key: show it masked (BIN and last four), never whole,
    # and with characters that cannot be shown replaced.
    shown = ".".join(mask_pans(part) for part in path)
    return shown.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd") or None


def _nothing_to_find(body: bytes) -> bool:
    """The common case, decided without parsing: an ASCII body (so UTF-8, read as it is) with
    fewer than 13 digits, no escape that could spell a digit, a NUL or a lone surrogate, and no
    exponent that could spell a long number in few digits."""
    return (
        body.isascii()
        and sum(map(body.count, b"0123456789")) < _MIN_DIGITS
        and b"\\u" not in body
        and b"\x00" not in body
        and _EXPONENT.search(body) is None
    )


def scan_json(body: bytes, *, max_depth: int) -> Scan:
    """The first problem in a JSON body, and the body to hand the app."""
    try:
        text = decode_json(body)
    except UnicodeDecodeError:
        lossy = body.decode("utf-8", "replace")
        return Scan(Finding("card_number" if contains_pan(lossy) else "undecodable", None), body)
    if json_depth_exceeds(text, max_depth):
        return Scan(Finding("too_deep", None), body)
    if _nothing_to_find(body):
        return Scan(None, body)
    try:
        document = parse_json(text)
    except (ValueError, RecursionError):
        return Scan(Finding("card_number", None) if contains_pan(text) else None, body)
    for kind, path in _walk(document, ()):
        return Scan(Finding(kind, _param(path)), body)
    if contains_pan(text):
        # Split across keys, values and elements ({"4242": "4242 4242 4242"}): the stored JSON,
        # read as text, would show it.
        return Scan(Finding("card_number", None), body)
    # Plain UTF-8 goes on as it came (byte for byte); other encodings as the same text in UTF-8.
    utf8 = body if json.detect_encoding(body) == "utf-8" else text.encode("utf-8")
    return Scan(None, utf8)


def _readings(wire: str) -> list[str]:
    """Text as Starlette reads it from the wire (Latin-1), and as UTF-8 when it is not ASCII: the
    bytes of ``４２４２`` read as Latin-1 are letters, but anyone reading the stored value as UTF-8
    sees the digits again."""
    if wire.isascii():
        return [wire]
    try:
        return [wire, wire.encode("latin-1").decode("utf-8", "replace")]
    except UnicodeEncodeError:  # not Latin-1: it did not come from the wire
        return [wire]


def scan_query(query: bytes) -> Finding | None:
    """A query string (or form body): each name and value, percent- and plus-decoded, as Starlette's
    ``QueryParams`` (and its form parser) read them; repeated names each in turn."""
    if not query:
        return None
    for reading in _readings(query.decode("latin-1")):
        for name, value in parse_qsl(reading, keep_blank_values=True):
            for part in (name, value):
                kind = _check(part)
                if kind is not None:
                    return Finding(kind, _param((name,)))
    # What parse_qsl could not split ("a=1&&4242...") is still searched as a whole.
    return scan_text(query)


def scan_text(body: bytes, param: str | None = None) -> Finding | None:
    """A body no parser of payorch reads: searched in the encodings JSON allows and in UTF-8."""
    texts = {body.decode("utf-8", "replace"), body.decode(json.detect_encoding(body), "replace")}
    if any(contains_pan(text) for text in texts):
        return Finding("card_number", param)
    return None


def scan_path(path: str) -> Finding | None:
    """The decoded path (an id in the URL) holding a card number, or a NUL (``%00``)."""
    kind = _check(path)
    if kind is not None:
        return Finding(kind, "path")
    return None


def scan_idempotency_key(key: str | None) -> Finding | None:
    """``Idempotency-Key`` (as Starlette decoded it, Latin-1) is stored: searched like a field."""
    if not key:
        return None
    for reading in _readings(key):
        kind = _check(reading)
        if kind is not None:
            return Finding(kind, "Idempotency-Key")
    return None


def scan_request(
    *,
    path: str,
    query: bytes,
    idempotency_key: str | None,
    content_type: str,
    body: bytes,
    max_depth: int,
) -> Scan:
    """The first problem anywhere in one request, or none, and the body to hand the app."""
    finding = scan_path(path) or scan_query(query) or scan_idempotency_key(idempotency_key)
    if finding is not None or not body:
        return Scan(finding, body)
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return Scan(scan_query(body), body)
    if media_type == "application/json" or media_type.endswith("+json") or not media_type:
        return scan_json(body, max_depth=max_depth)
    # A body of another type reaches no parser of payorch: searched as text, and as JSON in case
    # it is JSON after all.
    finding = scan_text(body)
    if finding is None:
        as_json = scan_json(body, max_depth=max_depth).finding
        finding = as_json if as_json is not None and as_json.kind == "card_number" else None
    return Scan(finding, body)
