"""The transport-error rule every adapter shares: not sent only before a byte of the request left us."""

from __future__ import annotations

import httpx
import pytest
from urllib3.exceptions import ConnectTimeoutError

from payorch.gateways.base import Outcome
from payorch.gateways.transport import causes, transport_outcome


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (httpx.ConnectError("refused"), Outcome.NOT_SENT),
        (httpx.ConnectTimeout("connect"), Outcome.NOT_SENT),
        (httpx.ReadTimeout("read"), Outcome.UNKNOWN),
        (httpx.RemoteProtocolError("disconnected"), Outcome.UNKNOWN),
    ],
)
def test_transport_errors(error: Exception, outcome: Outcome) -> None:
    assert transport_outcome(error) is outcome


def test_an_error_wrapped_in_an_sdks_own_is_found_at_any_depth() -> None:
    underneath = ConnectTimeoutError("connect")
    wrapped = RuntimeError("sdk failure", ValueError("layer"))
    wrapped.__cause__ = OSError(underneath)

    found = list(causes(wrapped))

    assert underneath in found
    assert transport_outcome(underneath, (ConnectTimeoutError,)) is Outcome.NOT_SENT
    assert transport_outcome(wrapped, (ConnectTimeoutError,)) is Outcome.UNKNOWN
