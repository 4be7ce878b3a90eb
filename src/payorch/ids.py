"""Prefixed, time-sortable ids: ``ch_`` + 10 chars of milliseconds + 16 random chars (Crockford base32).

Lexicographic order is creation order (to the millisecond), so listing newest first is ``ORDER BY id
DESC`` and cursors are plain ids.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Final, Literal

_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"

Prefix = Literal["ch", "att", "re", "pm", "evt", "whe", "whd", "bl", "mer", "key", "req", "aud", "sbx", "ga", "du"]


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(prefix: Prefix) -> str:
    millis = time.time_ns() // 1_000_000
    return f"{prefix}_{_encode(millis, 10)}{_encode(secrets.randbits(80), 16)}"


def time_bound(prefix: Prefix, when: datetime) -> str:
    """The smallest id with ``prefix`` made at ``when`` (to the millisecond): ``id >= time_bound(t)``
    selects the objects made from ``t`` on, by the id's index alone."""
    millis = int(when.timestamp() * 1000)
    return f"{prefix}_{_encode(millis, 10)}{_ALPHABET[0] * 16}"


def has_prefix(value: str, prefix: Prefix) -> bool:
    return value.startswith(prefix + "_") and len(value) == len(prefix) + 27
