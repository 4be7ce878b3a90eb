"""jsontext writes what the standard library wrote, byte for byte, for the values payorch stores."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from payorch import jsontext

_SCALARS = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text()
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30
)


def _standard(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@settings(max_examples=500, deadline=None)
@given(_VALUES)
def test_the_same_text_as_the_standard_library(value: Any) -> None:
    assert jsontext.dumps(value) == _standard(value).encode()
    assert jsontext.dumps_text(value) == _standard(value)


def test_what_orjson_refuses_is_written_by_the_standard_library() -> None:
    for value in ({"amount": 2**70}, {1: "a"}, [10**30, {"k": None}]):
        assert jsontext.dumps(value) == _standard(value).encode()
        assert jsontext.dumps_text(value) == _standard(value)
