"""The dashboard's session key: configured, or (outside production) a 0600 file under the data directory."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from payorch.dashboard.config import DashboardConfig
from payorch.dashboard.sessions import SessionCodec
from payorch.keyfiles import read_or_create

log = logging.getLogger(__name__)

KEY_FILE = "dashboard-session-key"


def session_codec(config: DashboardConfig, *, data_dir: Path) -> SessionCodec | None:
    """The codec of session cookies, or None when no key can be had: nothing configured and a data
    directory that cannot be written (a read-only container). The dashboard is then not served."""
    if config.session_secret is not None:
        secret = config.session_secret.get_secret_value()
    else:
        try:
            secret = read_or_create(data_dir / KEY_FILE, lambda: secrets.token_hex(32))
        except OSError as error:
            log.warning(
                "dashboard not served: no PAYORCH_DASHBOARD__SESSION_SECRET and no key file under %s (%s)",
                data_dir,
                error,
            )
            return None
    return SessionCodec(
        secret, idle_seconds=config.idle_timeout_minutes * 60, max_seconds=config.max_session_hours * 3600
    )
