"""Compact JSON for what the charge path writes: the answers it stores and replays, the audit
payloads it hands to Postgres.

orjson writes the same text as ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)`` for
what these hold (strings, integers, booleans, null, lists and string-keyed objects) several times
faster; the audit payloads alone were ~3% of a served charge's CPU through the standard library
(docs/benchmarks.md). What orjson refuses (an integer beyond 64 bits, a non-string key, a lone
surrogate) goes to the standard library, which writes (or refuses) it as before. A float NaN or
infinity is written as null, where the standard library wrote ``NaN``, which is not JSON and which
Postgres refuses; nothing here holds floats.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_text"]


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def dumps_text(value: Any) -> str:
    """``dumps`` as text, for a parameter Postgres reads as json or jsonb."""
    return dumps(value).decode()
