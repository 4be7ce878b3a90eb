"""Dashboard settings, nested in ``Settings`` as ``dashboard`` (``PAYORCH_DASHBOARD__IDLE_TIMEOUT_MINUTES=...``).

The defaults follow PCI DSS: a session idle for 15 minutes ends (8.2.8), and six failed sign-ins
lock the user for 30 minutes (8.3.4).
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, Field, SecretStr


class DashboardConfig(BaseModel):
    enabled: bool | None = None
    """Serve the console at ``/dashboard``. Unset: yes, except in production without a
    ``session_secret`` (production refuses ``true`` without one)."""
    session_secret: SecretStr | None = None
    """The key that signs session cookies (and derives CSRF tokens); every API process must share it.
    Unset outside production: a 0600 key file under ``data_dir`` is made on first use. Unset in
    production: the dashboard is not served; a placeholder is refused."""
    idle_timeout_minutes: float = Field(default=15.0, gt=0, le=24 * 60)
    """A session with no request for this long ends; the person signs in again."""
    max_session_hours: float = Field(default=12.0, gt=0, le=24 * 7)
    """A session ends this long after sign-in however active it is."""
    lockout_threshold: int = Field(default=6, ge=1, le=100)
    """Consecutive failed sign-ins that lock a user."""
    lockout_minutes: float = Field(default=30.0, gt=0, le=24 * 60)
    """How long a locked user stays locked (``payorch users unlock`` ends it sooner)."""
    secure_cookies: bool | None = None
    """Mark the session cookie ``Secure``. Unset: always in production (TLS ends at the proxy in
    front of payorch), and elsewhere when the request came over https, so ``make run`` on
    http://127.0.0.1 can sign in."""

    def served(self, *, production: bool) -> bool:
        if self.enabled is not None:
            return self.enabled
        return not production or self.session_secret is not None

    def production_problems(self, is_placeholder: Callable[[str], bool]) -> list[str]:
        """Why production would refuse these settings (none: it starts)."""
        problems = []
        secret = self.session_secret
        if self.served(production=True) and (secret is None or is_placeholder(secret.get_secret_value())):
            problems.append("the dashboard needs PAYORCH_DASHBOARD__SESSION_SECRET in production (signs sessions)")
        if self.secure_cookies is False:
            problems.append("production refuses PAYORCH_DASHBOARD__SECURE_COOKIES=false")
        return problems
