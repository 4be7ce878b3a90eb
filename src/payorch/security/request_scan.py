"""Hostile-input checks run once per request, before anything is parsed for real, logged, stored,
audited or fingerprinted for idempotency (DESIGN.md section 11).

``scan_request`` looks at the path, the query string, the ``Idempotency-Key`` header and the body and
returns the first problem found: a card number (a Luhn-valid 13-19 digit number, also with spaces or
dashes, see ``payorch.security.pan``) in any field, key or value at any depth, or a JSON body nested
deeper than the configured cap. Pure functions over bytes: the ASGI middleware in ``payorch.api``
buffers the (size-capped) body, calls this, and replays the body downstream.

A JSON body is read here with every number kept as its literal text (so ``4242424242424242`` sent as a
number is caught, and a 5,000-digit integer cannot trip Python's int-parsing limit), and with every
object kept as its list of pairs (so a card number hidden in a duplicated key is caught even though
the real parser keeps only the last one). The nesting depth is measured before parsing, so a body of
60,000 ``[`` never reaches the recursive parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

from payorch.security.pan import contains_pan, mask_pans

_MIN_DIGITS = 13  # the shortest card number

# A JSON string literal (escapes included), removed before brackets are counted. An unterminated one
# runs to the end of the text, so the pattern never fails and backtracks: linear on any input.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.|\\\Z)*(?:"|\Z)', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")


Kind = Literal["card_number", "too_deep", "bad_text"]


@dataclass(frozen=True)
class Finding:
    """What ``scan_request`` refuses: ``kind`` says why, ``param`` where (dotted path, card masked)."""

    kind: Kind
    param: str | None


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, duplicates kept."""


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


def _decode(body: bytes) -> str:
    """The body as text, in the encoding JSON allows (UTF-8, or UTF-16/32 by its first bytes)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode(json.detect_encoding(body), "replace")


def _parse_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_Pairs, parse_int=str, parse_float=str, parse_constant=str)


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
    elif isinstance(value, str):
        kind = _check(value)
        if kind is not None:
            yield kind, path


def _param(path: tuple[str, ...]) -> str | None:
    # The path may itself end in the offending key: show it masked (BIN and last four), never whole,
    # and with characters that cannot be shown replaced.
    shown = ".".join(mask_pans(part) for part in path)
    return shown.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd") or None


def _nothing_to_find(text: str) -> bool:
    """The common case, decided without parsing: fewer than 13 digits in the whole body (an escaped
    digit ``\\u0034`` has more digits written than it decodes to) and no escape or NUL that could
    hide a NUL or a lone surrogate."""
    return "\\u" not in text and "\x00" not in text and sum(map(text.count, "0123456789")) < _MIN_DIGITS


def scan_json(body: bytes, *, max_depth: int) -> Finding | None:
    """The first problem in a JSON body. A body that is not JSON is searched as text: it is refused
    downstream anyway, but a card number in it must not reach a log first."""
    text = _decode(body)
    if json_depth_exceeds(text, max_depth):
        return Finding("too_deep", None)
    if _nothing_to_find(text):
        return None
    try:
        document = _parse_json(text)
    except (ValueError, RecursionError):
        return Finding("card_number", None) if contains_pan(text) else None
    for kind, path in _walk(document, ()):
        return Finding(kind, _param(path))
    return None


def scan_form(body: bytes) -> Finding | None:
    """An ``application/x-www-form-urlencoded`` body (a gateway's webhook, say)."""
    return scan_query(body)


def scan_text(body: bytes, param: str | None = None) -> Finding | None:
    if contains_pan(body.decode("utf-8", "replace")):
        return Finding("card_number", param)
    return None


def scan_query(query: bytes) -> Finding | None:
    """A query string (or form body): each name and value, percent- and plus-decoded."""
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        kind = _check(name)
        if kind is not None:
            return Finding(kind, _param((name,)))
        kind = _check(value)
        if kind is not None:
            return Finding(kind, _param((name,)))
    # What parse_qsl could not split ("a=1&&4242...") is still searched as a whole.
    return scan_text(query)


def scan_path(path: str) -> Finding | None:
    """A path segment (an id in the URL) holding a card number, or a NUL (``%00``)."""
    kind = _check(path)
    if kind is not None:
        return Finding(kind, "path")
    return None


def scan_request(
    *,
    path: str,
    query: bytes,
    idempotency_key: str | None,
    content_type: str,
    body: bytes,
    max_depth: int,
) -> Finding | None:
    """The first problem anywhere in one request, or None when it may go on."""
    finding = scan_path(path) or scan_query(query)
    if finding is None and idempotency_key and contains_pan(idempotency_key):
        finding = Finding("card_number", "Idempotency-Key")
    if finding is not None or not body:
        return finding
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return scan_form(body)
    if media_type == "application/json" or media_type.endswith("+json") or body.lstrip()[:1] in (b"{", b"["):
        return scan_json(body, max_depth=max_depth)
    return scan_text(body)
