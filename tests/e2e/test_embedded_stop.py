"""Ctrl-C on ``make run`` (``payorch serve`` with no configuration) stops the embedded Postgres it
started, unless another payorch process still uses it; a payorch process that died without its
exit hooks (``kill -9``) must not keep it running for ever after."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.integration.redis_cluster import wait_until
from tests.integration.served_payorch import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PAYORCH = str(Path(sys.executable).with_name("payorch"))


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text(errors="replace")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def interrupt(self) -> int:
        """What Ctrl-C does: SIGINT, then wait for the process to finish by itself."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


def start(directory: Path) -> Serve:
    """``make run``: ``payorch serve`` in ``directory`` with no PAYORCH_ setting at all."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(directory),
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
    }
    log = directory / f"serve-{port}.log"
    with log.open("wb") as out:
        # SIGINT as a terminal delivers it (an interactive shell does not ignore it in its jobs).
        process = subprocess.Popen(
            [PAYORCH, "serve", "--port", str(port)],
            cwd=directory,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    served = Serve(process, f"http://127.0.0.1:{port}", log)
    wait_until(served.ready, "payorch serve to be ready", deadline_s=180)
    return served


def postmaster(directory: Path) -> int | None:
    """The embedded server's pid while it runs (first line of postmaster.pid), else None."""
    try:
        pid = int((directory / ".payorch" / "pgdata" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


@contextmanager
def cleanup(directory: Path, *serves: Serve) -> Iterator[None]:
    """Whatever happens, leave no payorch or Postgres behind."""
    try:
        yield
    finally:
        for served in serves:
            if served.process.poll() is None:
                served.process.kill()
                served.process.wait()
        pid = postmaster(directory)
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


def test_ctrl_c_stops_the_embedded_postgres(tmp_path: Path) -> None:
    served = start(tmp_path)
    with cleanup(tmp_path, served):
        pid = postmaster(tmp_path)
        assert pid is not None
        assert served.interrupt() == 0, served.log.read_text()
        wait_until(lambda: postmaster(tmp_path) is None, "the embedded Postgres to stop", deadline_s=60)


def test_a_shared_postgres_runs_while_one_user_is_left_even_after_a_kill(tmp_path: Path) -> None:
    first = start(tmp_path)
    second = start(tmp_path)
    with cleanup(tmp_path, first, second):
        pid = postmaster(tmp_path)
        assert pid is not None
        assert first.interrupt() == 0, first.log.read_text()
        assert postmaster(tmp_path) == pid  # the second one still uses it
        assert second.ready()

        second.process.kill()  # no exit hooks run: its pid stays in pgserver's list
        second.process.wait()
        assert postmaster(tmp_path) == pid

        third = start(tmp_path)
        with cleanup(tmp_path, third):
            assert postmaster(tmp_path) == pid  # it took over the running server
            assert third.interrupt() == 0, third.log.read_text()
            wait_until(lambda: postmaster(tmp_path) is None, "the embedded Postgres to stop", deadline_s=60)
