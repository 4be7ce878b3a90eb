"""The embedded Postgres stops with the last payorch process that uses it.

``storage.bootstrap.start_embedded`` gets the server from pgserver, which keeps the pid of every
process holding it in ``<pgdata>/.handle_pids.json`` and stops the server when the last of them
exits (an ``atexit`` hook). A process that died without running its exit hooks (``kill -9``, a
closed terminal, the OOM killer) stays in that list for good, so no later process was ever the last
one: Ctrl-C on ``make run`` then left Postgres running. ``stop_with_last_holder`` registers a hook
that runs just before pgserver's and first drops the pids of processes that no longer exist.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("payorch.embedded")

_registered: set[Path] = set()

HOLDERS_FILE = ".handle_pids.json"
"""pgserver's list of holder pids (pgserver 0.1, pinned in constraints.txt)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def drop_dead_holders(pgdata: Path) -> list[int]:
    """Remove the pids of processes that are gone from pgserver's holder list; return those left."""
    import pgserver.postgres_server as pgserver_module

    path = pgdata / HOLDERS_FILE
    with pgserver_module.PostgresServer._lock:  # the lock pgserver itself takes around the list
        try:
            holders = [int(pid) for pid in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            return []
        alive = [pid for pid in holders if _alive(pid)]
        if alive != holders:
            log.info("embedded Postgres: dropping holders that are gone: %s", sorted(set(holders) - set(alive)))
            path.write_text(json.dumps(alive))
    return alive


def stop_with_last_holder(data_dir: Path) -> None:
    """Call right after the embedded server was started for this process. atexit hooks run last
    registered first, so this one runs before pgserver's (registered when the server was got)."""
    pgdata = (data_dir / "pgdata").resolve()
    if pgdata in _registered:
        return
    _registered.add(pgdata)

    def before_pgserver_cleanup() -> None:
        with contextlib.suppress(Exception):  # never fail an exit over bookkeeping
            drop_dead_holders(pgdata)

    atexit.register(before_pgserver_cleanup)


def database_url(configured: str | None, data_dir: Path) -> str:
    """``configured`` (PAYORCH_DATABASE_URL), or the embedded server under ``data_dir``: started if
    needed, and stopped with the last payorch process using it (Ctrl-C on `make run`)."""
    if configured is not None:
        return configured
    from payorch.storage.bootstrap import start_embedded

    url = start_embedded(data_dir)
    stop_with_last_holder(data_dir)
    return url
