"""Keys kept in 0600 files under the data directory, outside production (where they are configured)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create(key_file: Path, make: Callable[[], str]) -> str:
    """The key in ``key_file``, made with ``make`` (mode 0600) the first time. Concurrent first starts
    agree on one key: ``link`` is atomic and never replaces a file."""
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() + "\n")
        try:
            os.link(draft, key_file)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return key_file.read_text().strip()
