"""The compose stack's own commands, outside containers (there is no Docker engine here).

docker-compose.yml is read as written: the ``migrate``, ``api`` and ``worker`` services' commands and
environment (anchors, merge keys and ``${VAR:-default}`` / ``${VAR:?error}`` interpolation from an
.env-like mapping), with the service names swapped for the local stand-ins: the test harness's Postgres
(a fresh database), the ``redis`` service's own command on a free port with its password, and a
moto S3 server with an Object Lock bucket where the stack has MinIO. The API listens on a free port
instead of 8000, and each process's operations port (``PAYORCH_METRICS__PORT``) is a free one.
Then ``/readyz`` must answer 200, and each process must stop cleanly on SIGTERM, as ``docker compose
stop`` would ask it to.

It runs once as the .env.example ships (development) and once as production. Each process gets a
directory of its own as working directory and home, in which ``.payorch`` (the data directory) is a
plain file: nothing can be written under it, even by root, as on the containers' read-only root
filesystem. A secret production needs that the compose file does not pass (a webhook key that each
process would otherwise mint into its data directory) fails the start.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from cryptography.fernet import Fernet
from moto.server import ThreadedMotoServer
from sqlalchemy.engine import make_url
from tests.conftest import _admin, _server_url, run_in_thread
from tests.integration.redis_cluster import free_port, wait_until

# Three processes and a full migration on a shared 2-core machine: more than the default 120 s.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}``, ``$$`` -> ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        current = env.get(name)
        if operator in (":-", "-") and not current:
            return argument
        if operator in (":?", "?") and not current:
            raise AssertionError(f"compose would refuse to start: {name}: {argument}")
        return current or ""

    return _VARIABLE.sub(replace, value)


def service_environment(service: str, env: dict[str, str]) -> dict[str, str]:
    """The variables a service's container receives; keys without a value are passed through from
    the .env only when set there (here: never, so they stay unset)."""
    declared: dict[str, Any] = COMPOSE["services"][service].get("environment") or {}
    return {name: interpolate(str(value), env) for name, value in declared.items() if value is not None}


def service_command(service: str, env: dict[str, str]) -> list[str]:
    return [interpolate(str(part), env) for part in COMPOSE["services"][service]["command"]]


def localise(variables: dict[str, str], hosts: dict[str, str]) -> dict[str, str]:
    """Point service names at local stand-ins: ``@postgres:5432`` -> ``@127.0.0.1:5432`` and so on."""
    localised = {}
    for name, value in variables.items():
        for service, address in hosts.items():
            # host:port ends at a path, a query or the end: never "//user:password@" (a password
            # may well start with digits).
            value = re.sub(rf"(?<=[@/]){service}:\d+(?=[/?]|$)", address, value)
        localised[name] = value
    return localised


@pytest.fixture
def dotenv() -> dict[str, str]:
    """What an operator's .env would hold (.env.example with its CHANGE_MEs replaced)."""
    server = make_url(_server_url())
    return {
        "POSTGRES_USER": server.username or "postgres",
        "POSTGRES_PASSWORD": secrets.token_urlsafe(16),  # the local server trusts loopback
        "POSTGRES_DB": f"payorch_compose_{secrets.token_hex(4)}",
        "REDIS_PASSWORD": secrets.token_urlsafe(24),
        "AUDIT_S3_ACCESS_KEY": "payorch-audit-writer",
        "AUDIT_S3_SECRET_KEY": secrets.token_urlsafe(24),
        "MINIO_ROOT_USER": "payorch-minio-admin",
        "MINIO_ROOT_PASSWORD": secrets.token_urlsafe(24),
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "PAYORCH_AUDIT__S3__BUCKET": "payorch-audit",
        "AUDIT_RETENTION_DAYS": "1",
        "PAYORCH_WEBHOOKS__SECRET_KEY": Fernet.generate_key().decode(),
    }


@pytest.fixture
def postgres(dotenv: dict[str, str]) -> Iterator[str]:
    server = _server_url()
    name = dotenv["POSTGRES_DB"]
    run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server)
    yield f"{url.host or '127.0.0.1'}:{url.port or 5432}"  # in GitLab CI: the postgres service
    run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def redis(dotenv: dict[str, str]) -> Iterator[str]:
    """The ``redis`` service's own command (password, AOF), on a free port in a temporary directory."""
    command = COMPOSE["services"]["redis"]["command"]
    assert command[:2] == ["sh", "-c"]
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="payorch-compose-redis-"))
    shell = interpolate(command[2], dotenv) + f" --port {port} --bind 127.0.0.1 --dir {directory} --save ''"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDIS_PASSWORD": dotenv["REDIS_PASSWORD"]}
    process = subprocess.Popen(["sh", "-c", shell], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        ping = subprocess.run(
            ["redis-cli", "-p", str(port), "--no-auth-warning", "-a", dotenv["REDIS_PASSWORD"], "ping"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return ping.stdout.strip() == "PONG"

    try:
        wait_until(answers, "the compose redis command")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def s3(dotenv: dict[str, str]) -> Iterator[str]:
    """Stands in for MinIO plus ``minio-init``: the audit bucket with Object Lock and default retention."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # moto's state is the process's, not the server's: an earlier run's bucket (and the audit events
    # its worker shipped, such as ``payorch migrate``'s) must not be found by this one.
    httpx.post(f"http://127.0.0.1:{port}/moto-api/reset", timeout=10).raise_for_status()
    try:
        client = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="us-east-1",
            aws_access_key_id=dotenv["AUDIT_S3_ACCESS_KEY"],
            aws_secret_access_key=dotenv["AUDIT_S3_SECRET_KEY"],
        )
        bucket = dotenv["PAYORCH_AUDIT__S3__BUCKET"]
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
        client.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
            },
        )
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


READ_ONLY = "a plain file: nothing can be created under it, as on a read-only root filesystem\n"


def container_dir(tmp_path: Path, name: str) -> Path:
    """A process's own working directory and home, whose ``.payorch`` (the data directory) is a file."""
    directory = tmp_path / f"{name}-root"
    directory.mkdir()
    (directory / ".payorch").write_text(READ_ONLY)
    return directory


def assert_untouched(directory: Path) -> None:
    """Nothing was written where the container's filesystem is read-only."""
    assert sorted(p.name for p in directory.iterdir()) == [".payorch"], sorted(directory.iterdir())
    assert (directory / ".payorch").read_text() == READ_ONLY


class Process:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("w")
        executable = Path(sys.executable).with_name(argv[0])
        assert executable.exists(), f"{argv[0]} is not installed next to {sys.executable}"
        self.root = container_dir(log_dir, name)
        self.process = subprocess.Popen(
            [str(executable), *argv[1:]],
            cwd=self.root,
            env={**env, "HOME": str(self.root)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self._log.close()

    def terminate(self, timeout: float) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"{self.name} ignored SIGTERM:\n{self.log()}") from None


def _option(argv: list[str], name: str, value: str) -> list[str]:
    """``--port 8000`` -> ``--port <value>`` (the one substitution made to a command)."""
    index = argv.index(name)
    return [*argv[: index + 1], value, *argv[index + 2 :]]


def healthcheck(service: str, env: dict[str, str]) -> int:
    """The service's compose ``healthcheck`` command, run as written (``CMD python ...``)."""
    test = COMPOSE["services"][service]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"], test
    return subprocess.run([sys.executable, *test[2:]], env=env, timeout=30, check=False).returncode


@pytest.mark.parametrize("environment", ["development", "production"])
def test_migrate_api_and_worker_run_as_compose_runs_them(
    dotenv: dict[str, str], postgres: str, redis: str, s3: str, tmp_path: Path, environment: str
) -> None:
    dotenv["PAYORCH_ENVIRONMENT"] = environment
    hosts = {"postgres": postgres, "redis": redis, "minio": s3}
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
    }

    migrate_env = {**base, **localise(service_environment("migrate", dotenv), hosts)}
    assert migrate_env["PAYORCH_DATABASE_URL"].endswith(f"@{postgres}/{dotenv['POSTGRES_DB']}")
    migrate = Process("migrate", service_command("migrate", dotenv), migrate_env, tmp_path)
    assert migrate.wait(timeout=120) == 0, migrate.log()
    assert "migrations applied" in migrate.log()

    port, api_ops, worker_ops = free_port(), free_port(), free_port()
    api_argv = _option(_option(service_command("api", dotenv), "--port", str(port)), "--host", "127.0.0.1")
    api_env = {**base, **localise(service_environment("api", dotenv), hosts)}
    assert api_env["PAYORCH_RUN_BACKGROUND_IN_API"] == "false"
    assert api_env["PAYORCH_ENVIRONMENT"] == environment
    api_env.update({"PAYORCH_METRICS__PORT": str(api_ops), "PAYORCH_METRICS__HOST": "127.0.0.1"})
    api = Process("api", api_argv, api_env, tmp_path)
    worker_env = {**base, **localise(service_environment("worker", dotenv), hosts)}
    # One key for both: a webhook secret the api seals, the worker must open.
    assert worker_env["PAYORCH_WEBHOOKS__SECRET_KEY"] == api_env["PAYORCH_WEBHOOKS__SECRET_KEY"]
    worker_env.update({"PAYORCH_METRICS__PORT": str(worker_ops), "PAYORCH_METRICS__HOST": "127.0.0.1"})
    worker = Process("worker", service_command("worker", dotenv), worker_env, tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert api.process.poll() is None, f"api exited:\n{api.log()}"
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "the api's /readyz", deadline_s=90)
        readiness = httpx.get(f"{url}/readyz", timeout=5).json()
        assert readiness == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}
        # Issue 18: /metrics moved off the API's public port, to the operations port.
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{api_ops}/metrics", timeout=5).status_code == 200

        def worker_started() -> bool:
            assert worker.process.poll() is None, f"worker exited:\n{worker.log()}"
            return "payorch worker started" in worker.log()

        wait_until(worker_started, "the worker to start", deadline_s=60)
        assert healthcheck("worker", worker_env) == 0, worker.log()
        scraped = httpx.get(f"http://127.0.0.1:{worker_ops}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert "payorch_webhook_deliveries_total" in scraped.text
        assert worker.process.poll() is None, worker.log()
    finally:
        api_code = api.terminate(timeout=30)
        worker_code = worker.terminate(timeout=60)
    # uvicorn finishes its graceful shutdown, then re-raises the signal it caught (exit 143 in Docker).
    assert api_code in (0, -signal.SIGTERM), api.log()
    assert "Application shutdown complete." in api.log()
    assert worker_code == 0, worker.log()
    # JSON lines (PAYORCH_LOG_JSON=true in the compose file), and no secret from the .env in them.
    for process in (api, worker):
        output = process.log()
        for secret in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "AUDIT_S3_SECRET_KEY", "PAYORCH_WEBHOOKS__SECRET_KEY"):
            assert dotenv[secret] not in output, (process.name, secret)
    for process in (migrate, api, worker):
        assert_untouched(process.root)
