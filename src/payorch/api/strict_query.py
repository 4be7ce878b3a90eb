"""Unknown query parameters are refused, as unknown body fields are (``extra="forbid"``): a typo such
as ``?limt=5`` must not be silently ignored, and the OpenAPI document stays the whole truth about
what a route reads (found by fuzzing the document with schemathesis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request

from payorch.errors import InvalidRequest

# Routes a third party redirects a browser to: the provider may add parameters of its own
# (``iss`` per RFC 9207, ``scope``, ``session_state``), which must not fail the redirect.
OPEN_QUERY_PATHS = frozenset({"/v1/bank_links/callback"})


def _query_names(dependant: Any) -> Iterator[str]:
    for param in getattr(dependant, "query_params", ()):
        yield str(param.alias)
    for sub in getattr(dependant, "dependencies", ()):
        yield from _query_names(sub)


async def reject_unknown_query(request: Request) -> None:
    """App-wide dependency: 400 ``parameter_unknown`` naming the first query parameter the route does
    not declare."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "path", None) in OPEN_QUERY_PATHS:
        return
    declared = set(_query_names(dependant))
    for name in request.query_params:
        if name not in declared:
            raise InvalidRequest(f"Received unknown parameter: {name}.", param=name, code="parameter_unknown")
