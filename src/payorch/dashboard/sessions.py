"""Dashboard sessions: signed cookies, their idle and absolute timeouts, and CSRF tokens.

A session is a signed cookie (itsdangerous, HMAC-SHA256 under the dashboard's secret), never stored
server side. It holds a random session id, the user, the user's session generation (signing out
bumps it in the database, so a copied cookie dies with the session), when it was issued and last
used, the merchant an operator is looking at, and one flash message. Nothing secret goes in it: it
is signed, not encrypted.

Every visitor gets a session, signed in or not, so the sign-in form has a CSRF token too. The token
is an HMAC of the session id under a key of its own (session-bound, not double-submitted): a form
from another site cannot know it, and a new session id at sign-in (no fixation) makes old tokens
worthless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

COOKIE_NAME = "payorch_dashboard"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Flash:
    kind: str
    """``ok`` or ``error``."""
    message: str


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    user_id: str | None
    generation: int
    issued_at: float
    seen_at: float
    merchant_id: str | None = None
    """The merchant an operator picked (a merchant's user always sees its own)."""
    flash: Flash | None = None

    @classmethod
    def anonymous(cls, now: float | None = None) -> Session:
        moment = time.time() if now is None else now
        return cls(sid=secrets.token_urlsafe(18), user_id=None, generation=0, issued_at=moment, seen_at=moment)

    def signed_in(self, user_id: str, generation: int, merchant_id: str | None) -> Session:
        """A new session id for the signed-in user: a token or cookie seen before sign-in is worthless."""
        fresh = Session.anonymous()
        return replace(fresh, user_id=user_id, generation=generation, merchant_id=merchant_id)

    def with_flash(self, kind: str, message: str) -> Session:
        return replace(self, flash=Flash(kind, message[:500]))


class SessionCodec:
    """Signs and reads session cookies, and derives and checks their CSRF tokens."""

    def __init__(self, secret: str, *, idle_seconds: float, max_seconds: float) -> None:
        signing = hmac.new(secret.encode(), b"payorch dashboard session", hashlib.sha256).hexdigest()
        self._csrf_key = hmac.new(secret.encode(), b"payorch dashboard csrf", hashlib.sha256).digest()
        self._serializer = URLSafeSerializer(signing, salt="payorch.dashboard.session")
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds

    def dumps(self, session: Session) -> str:
        flash = None if session.flash is None else [session.flash.kind, session.flash.message]
        payload = [
            session.sid,
            session.user_id,
            session.generation,
            session.issued_at,
            session.seen_at,
            session.merchant_id,
            flash,
        ]
        return str(self._serializer.dumps(payload))

    def loads(self, cookie: str | None) -> Session | None:
        """The session a cookie holds, or None when it is missing, forged or malformed."""
        if not cookie:
            return None
        try:
            payload: Any = self._serializer.loads(cookie)
            sid, user_id, generation, issued_at, seen_at, merchant_id, flash = payload
            return Session(
                sid=str(sid),
                user_id=None if user_id is None else str(user_id),
                generation=int(generation),
                issued_at=float(issued_at),
                seen_at=float(seen_at),
                merchant_id=None if merchant_id is None else str(merchant_id),
                flash=None if flash is None else Flash(str(flash[0]), str(flash[1])),
            )
        except (BadSignature, TypeError, ValueError, IndexError):
            return None

    def expired(self, session: Session, now: float | None = None) -> bool:
        """Idle too long, or older than the longest session allowed."""
        moment = time.time() if now is None else now
        return moment - session.seen_at > self.idle_seconds or moment - session.issued_at > self.max_seconds

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(self.csrf_token(session), presented)
