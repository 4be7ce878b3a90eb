"""The operator commands, run as a user would: subprocesses against PAYORCH_DATABASE_URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

PAYORCH = str(Path(sys.executable).with_name("payorch"))


def run(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PAYORCH_DATABASE_URL": database_url}
    return subprocess.run([PAYORCH, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


async def test_merchant_and_key_lifecycle(database_url: str, client: httpx.AsyncClient) -> None:
    created = run(database_url, "merchants", "create", "--name", "Corner shop")
    assert created.returncode == 0, created.stderr
    merchant_id = created.stdout.strip()
    assert merchant_id.startswith("mer_")

    keyed = run(database_url, "keys", "create", "--merchant", merchant_id)
    assert keyed.returncode == 0, keyed.stderr
    key_id, secret = keyed.stdout.split()
    assert key_id.startswith("key_")
    assert secret.startswith("sk_test_")
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/charges", headers=headers)).status_code == 200

    revoked = run(database_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/v1/charges", headers=headers)).status_code == 401
    again = run(database_url, "keys", "revoke", key_id)
    assert again.returncode != 0
    assert "no active key" in again.stderr


def test_bad_cli_input_is_refused(database_url: str) -> None:
    unknown = run(database_url, "keys", "create", "--merchant", "mer_doesnotexist")
    assert unknown.returncode != 0
    assert "no merchant" in unknown.stderr
    bad_mode = run(database_url, "keys", "create", "--merchant", "mer_x", "--mode", "prod")
    assert bad_mode.returncode != 0
    assert "mode must be test or live" in bad_mode.stderr


def _pg_env(database_url: str) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    env = {"PGUSER": url.username or "postgres", "PGDATABASE": url.database or ""}
    host = url.query.get("host") or url.host
    if isinstance(host, str) and host:
        env["PGHOST"] = host
    if url.port:
        env["PGPORT"] = str(url.port)
    return env


def test_the_key_is_stored_only_as_a_hash(database_url: str) -> None:
    merchant_id = run(database_url, "merchants", "create", "--name", "Hash check").stdout.strip()
    secret = run(database_url, "keys", "create", "--merchant", merchant_id, "--mode", "live").stdout.split()[1]
    assert secret.startswith("sk_live_")
    dump = subprocess.run(
        ["psql", "-At", "-c", "SELECT * FROM api_keys"],
        env={**os.environ, **_pg_env(database_url)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert secret not in dump
    assert secret[8:20] in dump  # the lookup id only
