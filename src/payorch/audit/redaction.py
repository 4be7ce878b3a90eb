"""The one redaction step run before anything is stored, shipped or logged (DESIGN.md sections 8, 11).

``redact(value)`` walks dicts, lists and strings and returns a JSON-ready copy in which:
- values under secret-bearing keys (cvc, password, token, api_key, authorization, ...) are replaced;
- card numbers are masked wherever they appear: in values, in free text, in keys, and as JSON numbers;
- strings that look like credentials are masked wherever they appear: our and Stripe's secret keys
  (``sk_live_...``, ``rk_test_...``), webhook secrets (``whsec_...``), Bearer/Basic credentials, JWTs,
  AWS access key ids and secret-looking 40-character values, PEM private keys.

Card numbers are found by ``payorch.security.pan``, the detector the request guard refuses them
with: one rule for what is refused, logged and audited.

``redact_log_event`` is the same function in structlog processor form, so logs share it; it also cuts
every URL in a log line down to its scheme, host, port and route words (``redact_urls``).

Most strings (ids, statuses, currency codes) hold nothing to mask, so ``redact_text`` first asks a
few cheap questions (``_may_need_masking``) that every pattern needs a "yes" to, and runs the full
pipeline (``_redact_text_full``) only then. The pre-screen changes no result: it may say "perhaps"
too often, never "no" wrongly (tests/unit/test_redaction_prescreen.py compares the two paths).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import re
import uuid
from collections.abc import Mapping, MutableMapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from payorch.security.pan import is_card_number, mask_digits, mask_pans, may_contain_pan

REDACTED = "[REDACTED]"
_MAX_DEPTH = 32

# Keys compared after lower-casing and dropping "-" and "_": "Card-Number" == "card_number".
_SECRET_KEYS = frozenset(
    {
        "cvc", "cvv", "cvc2", "cvv2", "cid", "securitycode", "cardnumber", "number", "pan", "ccnumber",
        "password", "passwd", "passphrase", "secret", "token", "tokens", "apikey", "authorization",
        "proxyauthorization", "cookie", "setcookie", "refreshtoken", "accesstoken", "idtoken",
        "clientsecret", "privatekey", "secretkey", "secretaccesskey", "sessiontoken", "webhooksecret",
        "signingsecret", "codeverifier", "xapikey", "bankaccountnumber", "accountnumber", "iban",
    }
)  # fmt: skip
_SECRET_SUFFIXES = ("secret", "password", "token", "apikey", "privatekey", "secretkey")

_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"(?<![0-9A-Za-z])(sk|rk)_(test|live)_[0-9A-Za-z_]+"), r"\1_\2_" + REDACTED),
    (re.compile(r"(?<![0-9A-Za-z])whsec_[0-9A-Za-z+/=_\-]+"), "whsec_" + REDACTED),
    (re.compile(r"\b([Bb][Ee][Aa][Rr][Ee][Rr])\s+[0-9A-Za-z\-._~+/]{8,}=*"), r"\1 " + REDACTED),
    (
        re.compile(r"\bBasic\s+[0-9A-Za-z+/](?=[0-9A-Za-z+/]*[0-9A-Z+/=])[0-9A-Za-z+/]{7,}=*"),
        "Basic " + REDACTED,
    ),
    (re.compile(r"\beyJ[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]+\.[0-9A-Za-z_\-]*"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[0-9A-Z]{16}\b"), REDACTED),
    # A 40-character base64 run with upper, lower and a digit or / or +: an AWS secret access key.
    # Lower-case hex digests (SHA-1 is 40 characters) do not qualify.
    (
        re.compile(
            r"(?<![0-9A-Za-z/+=])(?=[0-9A-Za-z/+]{0,39}[A-Z])(?=[0-9A-Za-z/+]{0,39}[a-z])"
            r"(?=[0-9A-Za-z/+]{0,39}[0-9/+])[0-9A-Za-z/+]{40}(?![0-9A-Za-z/+=])"
        ),
        REDACTED,
    ),
)


def _normalise_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a value that must never be stored (``cvc``, ``api_key``...)."""
    normal = _normalise_key(key)
    return normal in _SECRET_KEYS or normal.endswith(_SECRET_SUFFIXES)


# The shortest text any pattern above (or a card number, 13 digits) can match: "whsec_x", "eyJx.y.".
_MIN_MATCH = 7
# A 40-character run of the last pattern's alphabet: that pattern needs one (and more besides).
_LONG_RUN = re.compile(r"[0-9A-Za-z/+]{40}")


def _may_need_masking(text: str) -> bool:
    """False only when no pattern above and no card number can match ``text``. Each test is a piece
    of text a pattern cannot match without; a "yes" only sends the text to the full pipeline."""
    if len(text) < _MIN_MATCH:
        # Too short for any pattern; a card number needs 13 digits, but one character may fold to
        # three of them (NFKC), so a short non-ASCII text is asked.
        return not text.isascii() and may_contain_pan(text)
    return (
        "PRIVATE KEY" in text  # -----BEGIN ... PRIVATE KEY-----
        or "k_test_" in text  # sk_test_, rk_test_
        or "k_live_" in text  # sk_live_, rk_live_
        or "whsec_" in text
        or "Basic" in text
        or "eyJ" in text
        or "AKIA" in text
        or "ASIA" in text
        or "AIDA" in text
        or "AROA" in text
        or "bearer" in text.lower()  # [Bb][Ee][Aa][Rr][Ee][Rr]: lower() maps each letter on its own
        or may_contain_pan(text)
        or (len(text) >= 40 and _LONG_RUN.search(text) is not None)
    )


def _storable(text: str) -> str:
    """Drop what Postgres JSON refuses: NUL characters, and lone surrogates (not valid UTF-8)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if text.isascii():  # no surrogates: the encode below cannot fail
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not storable as jsonb
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def redact_text(text: str) -> str:
    """Mask credentials and card numbers inside free text; also drop what Postgres JSON refuses."""
    if type(text) is not str or _may_need_masking(text):  # a str subclass: the full path, to be sure
        return _redact_text_full(text)
    return _storable(text)


def _redact_text_full(text: str) -> str:
    """``redact_text`` without the pre-screen: every pattern, then card numbers, on every string."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = mask_pans(text)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not storable as jsonb
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _redact_int(number: int) -> int | str:
    if number > 10**12 or number < -(10**12):
        digits = str(abs(number))
        if is_card_number(digits):
            return mask_digits(digits)
    return number


def _redact_float(number: float) -> float | str:
    if not math.isfinite(number):
        return str(number)
    if number.is_integer() and abs(number) < 1e20:
        masked = _redact_int(int(number))
        if isinstance(masked, str):
            return masked
    return number


def redact(value: Any, *, _depth: int = 0) -> Any:
    """Return a redacted, JSON-ready copy of ``value`` (dicts, lists, scalars, pydantic models)."""
    if _depth > _MAX_DEPTH:
        return "[REDACTED: nested too deep]"
    # What JSON dumps are made of, by exact type first (no ABC check); then the general cases.
    kind = type(value)
    if kind is str:
        return redact_text(value)
    if kind is dict:
        return _redact_mapping(value, _depth)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, int):
        return _redact_int(value)
    if isinstance(value, float):
        return _redact_float(value)
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Mapping):
        return _redact_mapping(value, _depth)
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, _depth=_depth + 1) for item in value]
    return _redact_other(value, _depth)


# Mapping keys are a small, recurring set ("amount", "merchant_id"...): remember, per key, its
# redacted name and whether it names a secret. Only keys that redaction leaves as they are, and that
# are short, are kept (a key holding a card number or a credential is never remembered), and the
# whole memo is dropped when full, so it stays small and follows the keys in use.
_KEY_MEMO: dict[str, tuple[str, bool]] = {}
_KEY_MEMO_SIZE = 4096
_KEY_MEMO_MAX_LENGTH = 64


def _key_verdict(key: str) -> tuple[str, bool]:
    """(the key as stored, whether its value must be dropped) for an exact ``str`` key."""
    verdict = _KEY_MEMO.get(key)
    if verdict is None:
        name = redact_text(key)
        verdict = (name, is_secret_key(key))
        if name == key and len(key) <= _KEY_MEMO_MAX_LENGTH:
            if len(_KEY_MEMO) >= _KEY_MEMO_SIZE:
                _KEY_MEMO.clear()
            _KEY_MEMO[key] = verdict
    return verdict


def _redact_mapping(mapping: Mapping[Any, Any], depth: int) -> dict[str, Any]:
    redacted: dict[str, Any] = {}
    for key, item in mapping.items():
        if type(key) is str:
            name, secret = _key_verdict(key)
        elif isinstance(key, str):
            name, secret = redact_text(key), is_secret_key(key)
        else:
            name, secret = redact_text(str(key)), False
        if secret and item is not None:
            redacted[name] = REDACTED
        else:
            redacted[name] = redact(item, _depth=depth + 1)
    return redacted


def _redact_other(value: Any, depth: int) -> Any:
    if isinstance(value, BaseModel):
        return redact(value.model_dump(mode="json"), _depth=depth + 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return redact(dataclasses.asdict(value), _depth=depth + 1)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return redact(value.value, _depth=depth + 1)
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    return redact_text(str(value))


# A URL in free text: scheme, authority (userinfo, host, port), path, query, fragment. Quotes and
# angle brackets end it, as they end a URL written in a log line, a repr or a JSON string. (Request
# targets without a scheme are not logged: the access log is off, request lines name route templates.)
_URL_END = "\\s\"'<>"
_URL = re.compile(
    rf"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^/?#{_URL_END}]*)"
    rf"(?P<path>/[^?#{_URL_END}]*)?(?P<query>\?[^#{_URL_END}]*)?(?P<fragment>#[^{_URL_END}]*)?"
)
# A path segment kept as it is: short, or a lower-case route word. Longer segments with digits or
# capitals are where webhook receivers put their secrets (/services/T0/B0/<token>, /webhooks/<id>/<token>).
_PLAIN_SEGMENT = re.compile(r"[^/]{0,16}|[a-z][a-z_.\-]*")


def _redacted_url(match: re.Match[str]) -> str:
    _, at, host = match["authority"].rpartition("@")
    parts = [match["scheme"], f"{REDACTED}@" if at else "", host]
    path = match["path"] or ""
    parts.append("/".join(s if _PLAIN_SEGMENT.fullmatch(s) else REDACTED for s in path.split("/")))
    query = match["query"] or ""
    if len(query) > 1:
        names = (pair.partition("=")[0] for pair in query[1:].split("&"))
        query = "?" + "&".join(f"{name}={REDACTED}" for name in names)
    parts.append(query)
    fragment = match["fragment"] or ""
    parts.append(f"#{REDACTED}" if len(fragment) > 1 else fragment)
    return "".join(parts)


def redact_urls(text: str) -> str:
    """Every URL in ``text`` with its userinfo, query values and fragment replaced, and its long
    path segments (see ``_PLAIN_SEGMENT``); scheme, host, port, route words and parameter names
    stay for the reader."""
    if "://" not in text:
        return text
    return _URL.sub(_redacted_url, text)


def _redact_urls_in(value: Any) -> Any:
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {key: _redact_urls_in(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_urls_in(item) for item in value]
    return value


# structlog keys that carry structure the later processors need, not user data.
_LOG_PASSTHROUGH = frozenset({"exc_info", "stack_info", "_record", "_from_structlog"})


def redact_log_event(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: redact every field, and every URL in it (a log line is read by more
    people than the audit trail, and webhook receivers put secrets in their URLs: httpx logs each
    request's URL at INFO). Place it after ``format_exc_info`` so tracebacks, already rendered to
    text, are redacted too."""
    for key in list(event_dict):
        if key in _LOG_PASSTHROUGH:
            continue
        value = event_dict[key]
        if is_secret_key(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_urls_in(redact(value))
    return event_dict
