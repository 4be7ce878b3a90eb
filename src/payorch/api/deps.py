"""Typed dependencies: the runtime, the authenticated caller."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Header, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from payorch.audit.events import Origin
from payorch.errors import AuthenticationFailed
from payorch.observability.logging import bind_merchant
from payorch.payments.operations import Reply
from payorch.runtime import Runtime
from payorch.security.api_keys import Caller

bearer = HTTPBearer(auto_error=False, description="A secret API key: `sk_test_...` or `sk_live_...`.")


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hand-off per request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authenticate(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    # The runtime straight from the app, not as a sub-dependency: each dependency FastAPI solves
    # per request costs more than reading the attribute (docs/benchmarks.md).
    runtime: Runtime = request.app.state.runtime
    # The peer address; the rate limiter resolves X-Forwarded-For through trusted proxies only.
    ip = request.scope.get("state", {}).get("client_ip") or (request.client.host if request.client else None)
    request_id = str(getattr(request.state, "request_id", "")) or None
    identified = await runtime.authenticator.identify(None if credentials is None else credentials.credentials)
    if not isinstance(identified, Caller):
        # Audited (PCI DSS 10.2.1.4), bounded per key prefix and IP; the 401 does not wait on it failing.
        await runtime.auth_failures.failed(identified, Origin(ip=ip, request_id=request_id))
        if credentials is None:
            raise AuthenticationFailed(
                "You did not provide an API key: use 'Authorization: Bearer <your sk_test_ or sk_live_ key>'.",
                code="missing_api_key",
            )
        raise AuthenticationFailed("Invalid API key provided.")
    bind_merchant(identified.merchant_id)  # every later log line of this request names the merchant
    return replace(identified, ip=ip, request_id=request_id)


CurrentCaller = Annotated[Caller, Depends(authenticate)]


IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Retry safely: Stripe's semantics."),
]


def reply_response(reply: Reply) -> Response:
    """An idempotent POST's answer: the stored bytes as they were, marked when replayed."""
    headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)
