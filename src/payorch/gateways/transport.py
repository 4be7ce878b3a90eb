"""Transport failures, read once for every adapter: did the request leave us, or may it have run?

Only a failure that happens before a byte of the request is written is NOT_SENT (safe to try the
next gateway). Anything after that (a read timeout, a reset, a protocol error) may follow a request
the gateway executed, so it is UNKNOWN.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import httpx

from payorch.gateways.base import Outcome

HTTPX_BEFORE_WRITING: Final[tuple[type[BaseException], ...]] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
"""httpx raises ConnectError for refused connections, DNS failures and TLS handshake failures, and
ConnectTimeout / PoolTimeout / UnsupportedProtocol before a byte of the request is written."""


def transport_outcome(
    error: BaseException | None, before_writing: tuple[type[BaseException], ...] = HTTPX_BEFORE_WRITING
) -> Outcome:
    """NOT_SENT only if ``error`` is one a client raises before writing the request."""
    return Outcome.NOT_SENT if isinstance(error, before_writing) else Outcome.UNKNOWN


def causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and everything it wraps: causes, contexts, ``reason`` and exception arguments.

    For SDKs that wrap the transport's exception in their own (several layers deep, sometimes in
    ``args``), so the failure underneath can be classified by :func:`transport_outcome`.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))
