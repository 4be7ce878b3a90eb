"""A protocol-level fake OAuth 2.0 authorization server (RFC 6749 authorization code, RFC 7636 PKCE)
on 127.0.0.1, for payorch's real httpx token client.

- ``GET /authorize`` checks client id, redirect URI and the S256 challenge, then redirects back to
  the redirect URI with a one-time ``code`` and the ``state`` (or with ``error=access_denied`` when
  ``deny_next`` is set), as a provider does after the user consents.
- ``POST /token`` authenticates the client by the configured method only (HTTP Basic, or the
  ``client_id``/``client_secret`` form fields), then for ``authorization_code`` checks the code is
  known, unused, issued to this client for this redirect URI, and that SHA-256(code_verifier) equals
  the challenge; for ``refresh_token`` it rotates: the presented token dies, a new one is issued.
- ``fault`` answers the token endpoint with 400/500/garbage/no refresh token, or hangs until released.

Every issued token is kept in ``issued_access_tokens``/``issued_refresh_tokens`` so tests can look
for them anywhere they must not be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from enum import StrEnum

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route


class TokenFault(StrEnum):
    SERVER_ERROR = "server_error"  # 500
    INVALID_GRANT = "invalid_grant"  # 400 {"error": "invalid_grant"}
    GARBAGE = "garbage"  # 200 with a body that is not JSON
    NO_REFRESH_TOKEN = "no_refresh_token"  # 200 with an access token only
    HANG = "hang"  # no answer until released


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    used: bool = False


@dataclass
class FakeOAuthProvider:
    client_id: str = "payorch-client"
    client_secret: str = field(default_factory=lambda: "cs-" + secrets.token_urlsafe(24))
    auth_method: str = "client_secret_basic"
    redirect_uris: set[str] = field(default_factory=set)
    rotate_refresh_tokens: bool = True
    fault: TokenFault | None = None
    deny_next: bool = False
    issued_access_tokens: list[str] = field(default_factory=list)
    issued_refresh_tokens: list[str] = field(default_factory=list)
    issued_codes: list[str] = field(default_factory=list)
    token_requests: list[str] = field(default_factory=list)
    """Grant type of every authenticated token request, in order."""
    rejections: list[str] = field(default_factory=list)
    """Why token requests were refused (client auth, PKCE, reused code...)."""
    hanging: int = 0
    url: str = ""
    _grants: dict[str, Grant] = field(default_factory=dict)
    _refresh: dict[str, bool] = field(default_factory=dict)
    """refresh token -> still valid."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def authorize_url(self) -> str:
        return self.url + "/authorize"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    # -- control --------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> str:
        app = Starlette(
            routes=[
                Route("/authorize", self._authorize, methods=["GET"]),
                Route("/token", self._token, methods=["POST"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("OAuth provider fake did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self._release.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)

    def release(self) -> None:
        """Let hanging token requests finish (with a 500)."""
        self._release.set()

    def valid_refresh_tokens(self) -> list[str]:
        with self._lock:
            return [token for token, valid in self._refresh.items() if valid]

    async def consent(self, authorize_url: str) -> str:
        """Play the user's browser at the provider: follow ``authorize_url`` and return the redirect
        (payorch's callback URL with ``code`` and ``state``, or with ``error``)."""
        async with httpx.AsyncClient(timeout=10) as browser:
            response = await browser.get(authorize_url)
        assert response.status_code == 302, response.text
        return response.headers["location"]

    # -- endpoints ------------------------------------------------------------------------------

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != self.client_id or redirect_uri not in self.redirect_uris:
            return PlainTextResponse("unknown client or redirect_uri", status_code=400)
        state = query.get("state")
        if query.get("response_type") != "code" or query.get("code_challenge_method") != "S256":
            return _back(redirect_uri, {"error": "invalid_request", "state": state})
        challenge = query.get("code_challenge", "")
        if len(challenge) != 43:
            return _back(redirect_uri, {"error": "invalid_request", "state": state})
        if self.deny_next:
            self.deny_next = False
            return _back(
                redirect_uri, {"error": "access_denied", "error_description": "The user said no", "state": state}
            )
        code = "code-" + secrets.token_urlsafe(24)
        with self._lock:
            self._grants[code] = Grant(self.client_id, redirect_uri, challenge, query.get("scope", ""))
            self.issued_codes.append(code)
        return _back(redirect_uri, {"code": code, "state": state})

    async def _token(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        if not self._client_authenticated(request, form):
            return self._refuse(401, "invalid_client", "client authentication failed")
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.token_requests.append(grant_type)
        fault = self.fault
        if fault is TokenFault.HANG:
            with self._lock:
                self.hanging += 1
            deadline = time.monotonic() + 30
            while not self._release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return PlainTextResponse("too late", status_code=500)
        if fault is TokenFault.SERVER_ERROR:
            return PlainTextResponse("upstream exploded", status_code=500)
        if fault is TokenFault.INVALID_GRANT:
            return self._refuse(400, "invalid_grant", "injected")
        if fault is TokenFault.GARBAGE:
            return Response(b"<html>\x00\xff not json", status_code=200, media_type="application/json")
        if grant_type == "authorization_code":
            return self._redeem_code(form)
        if grant_type == "refresh_token":
            return self._rotate(form)
        return self._refuse(400, "unsupported_grant_type", grant_type)

    def _client_authenticated(self, request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if self.auth_method == "client_secret_basic":
            if not header.startswith("Basic ") or "client_secret" in form:
                return False
            try:
                pair = base64.b64decode(header[6:], validate=True).decode()
            except ValueError:
                return False
            client_id, _, secret = pair.partition(":")
            return urllib.parse.unquote_plus(client_id) == self.client_id and secrets.compare_digest(
                urllib.parse.unquote_plus(secret), self.client_secret
            )
        if header:
            return False
        return form.get("client_id") == self.client_id and secrets.compare_digest(
            form.get("client_secret", ""), self.client_secret
        )

    def _redeem_code(self, form: dict[str, str]) -> Response:
        code, verifier = form.get("code", ""), form.get("code_verifier", "")
        with self._lock:
            grant = self._grants.get(code)
            if grant is None or grant.used:
                return self._refuse(400, "invalid_grant", "unknown or used code")
            grant.used = True
        if form.get("redirect_uri") != grant.redirect_uri:
            return self._refuse(400, "invalid_grant", "redirect_uri mismatch")
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not 43 <= len(verifier) <= 128 or not secrets.compare_digest(computed, grant.challenge):
            return self._refuse(400, "invalid_grant", "PKCE verification failed")
        return self._issue(grant.scope, with_refresh=self.fault is not TokenFault.NO_REFRESH_TOKEN)

    def _rotate(self, form: dict[str, str]) -> Response:
        presented = form.get("refresh_token", "")
        with self._lock:
            if not self._refresh.get(presented):
                return self._refuse(400, "invalid_grant", "unknown or retired refresh token")
            if self.rotate_refresh_tokens:
                self._refresh[presented] = False
        return self._issue("", with_refresh=self.rotate_refresh_tokens)

    def _issue(self, scope: str, *, with_refresh: bool) -> Response:
        access = "fake-at-" + secrets.token_urlsafe(32)
        body: dict[str, object] = {"access_token": access, "token_type": "Bearer", "expires_in": 900}
        if scope:
            body["scope"] = scope
        with self._lock:
            self.issued_access_tokens.append(access)
            if with_refresh:
                refresh = "fake-rt-" + secrets.token_urlsafe(32)
                self._refresh[refresh] = True
                self.issued_refresh_tokens.append(refresh)
                body["refresh_token"] = refresh
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    def _refuse(self, status: int, error: str, why: str) -> Response:
        with self._lock:
            self.rejections.append(f"{error}: {why}")
        return JSONResponse({"error": error, "error_description": why}, status_code=status)


def _back(redirect_uri: str, params: dict[str, str | None]) -> Response:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(f"{redirect_uri}?{query}", status_code=302)


REDIRECT_URI = "http://payorch.test/v1/bank_links/callback"
SUCCESS_URL = "https://shop.example/bank/linked?from=payorch"
FAILURE_URL = "https://shop.example/bank/failed"


def banking_settings(
    provider: FakeOAuthProvider, *, secrets_config: dict[str, object] | None = None, **provider_overrides: object
) -> dict[str, object]:
    """The ``banking`` settings section pointing payorch at this fake."""
    provider.redirect_uris.add(REDIRECT_URI)
    values: dict[str, object] = {
        "authorize_url": provider.authorize_url,
        "token_url": provider.token_url,
        "client_id": provider.client_id,
        "client_secret": provider.client_secret,
        "scopes": ["accounts:read", "transactions:read"],
        "redirect_uri": REDIRECT_URI,
        "client_auth_method": provider.auth_method,
        "success_url": SUCCESS_URL,
        "failure_url": FAILURE_URL,
        "token_timeout_seconds": 5.0,
        **provider_overrides,
    }
    return {"provider": values, "secrets": secrets_config or {}}
