"""`payorch merchants/keys` are audited, and `payorch audit verify` run as a subprocess against a
local sink: it passes on what the Runtime shipped, and names the event after tampering with one
line, deleting one file, or reordering two events.

A dedicated database, so the chain holds only this module's events.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from tests.conftest import _admin, _server_url, make_settings, run_in_thread
from tests.factories import charge_body

from payorch.app import create_app
from payorch.audit.chain import ChainedEvent, chain_events
from payorch.runtime import Runtime
from payorch.storage import audit as audit_store
from payorch.storage.bootstrap import run_migrations
from payorch.storage.database import Database, DatabaseConfig

CHARGES = 6


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    server = _server_url()
    name = f"payorch_auditcli_{secrets.token_hex(4)}"
    run_in_thread(lambda: _admin(server, f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    run_migrations(url, partitions=2)
    yield url
    run_in_thread(lambda: _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def payorch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "payorch"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-local")


@pytest.fixture(scope="module")
def cli_env(own_database: str, audit_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYORCH_")}
    env.update(
        PAYORCH_DATABASE_URL=own_database,
        PAYORCH_ENVIRONMENT="development",
        PAYORCH_DATA_DIR=str(tmp_path_factory.mktemp("data")),
        PAYORCH_AUDIT__LOCAL__DIRECTORY=str(audit_dir),
        USER="auditor",
        LOGNAME="auditor",
    )
    return env


@pytest.fixture(scope="module")
async def shipped(own_database: str, audit_dir: Path, cli_env: dict[str, str]) -> dict[str, str]:
    """A merchant and key made with the CLI, charges through the app, and a Runtime whose shipper
    only ships on its way out (``aclose`` finishes the current round)."""
    created = payorch(cli_env, "merchants", "create", "--name", "Audited Ltd")
    assert created.returncode == 0, created.stderr
    merchant_id = created.stdout.strip()
    key_line = payorch(cli_env, "keys", "create", "--merchant", merchant_id).stdout.split()
    key_id, key = key_line[0], key_line[1]
    spare_id = payorch(cli_env, "keys", "create", "--merchant", merchant_id, "--mode", "live").stdout.split()[0]
    revoked = payorch(cli_env, "keys", "revoke", spare_id)
    assert revoked.returncode == 0, revoked.stderr

    settings = make_settings(
        own_database,
        audit={"local": {"directory": str(audit_dir)}, "max_batch_age_seconds": 3600, "batch_size": 10},
    )
    runtime = await Runtime.build(settings, own_database)
    runtime.start_background()
    try:
        transport = httpx.ASGITransport(app=create_app(settings, runtime=runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://payorch.test") as http:
            for amount in range(100, 100 + CHARGES):
                response = await http.post(
                    "/v1/charges", json=charge_body(amount=amount), headers={"Authorization": f"Bearer {key}"}
                )
                assert response.status_code == 201
    finally:
        await runtime.aclose()
    return {"merchant_id": merchant_id, "key_id": key_id, "spare_id": spare_id, "key": key}


def read_links(directory: Path) -> list[ChainedEvent]:
    return [
        ChainedEvent.from_json(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def tampered_copy(source: Path, target: Path) -> list[Path]:
    shutil.copytree(source, target)
    files = sorted(target.glob("*.jsonl"))
    for path in files:
        path.chmod(0o644)
    return files


async def test_cli_actions_are_audited_and_aclose_shipped_everything(
    shipped: dict[str, str], own_database: str, audit_dir: Path
) -> None:
    links = read_links(audit_dir)
    events = [link.event for link in links]
    cli_events = [e for e in events if (e["actor"].get("user") or "").startswith("cli:")]
    assert [(e["action"], e["resource"]["id"]) for e in cli_events] == [
        ("merchant.created", shipped["merchant_id"]),
        ("api_key.created", shipped["key_id"]),
        ("api_key.created", shipped["spare_id"]),
        ("api_key.revoked", shipped["spare_id"]),
    ]
    assert {e["actor"]["user"] for e in cli_events} == {"cli:auditor"}
    assert all(e["actor"]["merchant_id"] == shipped["merchant_id"] for e in cli_events)
    assert shipped["key"] not in json.dumps(events)
    assert sum(e["action"] == "charge.created" for e in events) == CHARGES
    # The shipper shipped on its way out: nothing is left unshipped, and the files are read-only.
    run_links = await _chain_tip(own_database)
    assert [link.seq for link in links] == list(range(1, run_links + 1))
    assert all(oct(path.stat().st_mode)[-3:] == "444" for path in audit_dir.glob("*.jsonl"))


async def _chain_tip(database_url: str) -> int:
    db = Database(DatabaseConfig(database_url, pool_size=1))
    try:
        async with db.transaction() as transaction:
            assert await audit_store.count_outbox(transaction) == 0
            tip, _ = await audit_store.chain_tip(transaction)
            return tip
    finally:
        await db.close()


def test_verify_passes_on_the_shipped_sink(shipped: dict[str, str], cli_env: dict[str, str]) -> None:
    result = payorch(cli_env, "audit", "verify", "--sink", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("local: ok: ")
    default = payorch(cli_env, "audit", "verify")
    assert default.returncode == 0
    assert default.stdout == result.stdout


def test_verify_names_an_altered_line(
    shipped: dict[str, str],
    cli_env: dict[str, str],
    audit_dir: Path,
    tmp_path: Path,
) -> None:
    files = tampered_copy(audit_dir, tmp_path / "altered")
    lines = files[1].read_text().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["event"]["details"]["amount"] = 1
    lines[2] = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
    files[1].write_text("".join(lines))
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "altered")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1
    assert f"FAILED at seq {record['seq']} (altered)" in result.stdout
    assert record["event"]["id"] in result.stdout


def test_verify_names_a_deleted_batch(
    shipped: dict[str, str],
    cli_env: dict[str, str],
    audit_dir: Path,
    tmp_path: Path,
) -> None:
    files = tampered_copy(audit_dir, tmp_path / "deleted")
    first_missing = ChainedEvent.from_json(files[1].read_text().splitlines()[0]).seq
    files[1].unlink()
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "deleted")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1
    assert f"FAILED at seq {first_missing} (gap)" in result.stdout

    # The last batch deleted: the sink alone looks whole; the database's chain says otherwise.
    files = tampered_copy(audit_dir, tmp_path / "tail")
    files[-1].unlink()
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "tail")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1
    assert "(missing_tail)" in result.stdout


def test_verify_names_a_reorder(
    shipped: dict[str, str],
    cli_env: dict[str, str],
    audit_dir: Path,
    tmp_path: Path,
) -> None:
    files = tampered_copy(audit_dir, tmp_path / "reordered")
    lines = files[0].read_text().splitlines(keepends=True)
    moved = ChainedEvent.from_json(lines[4])
    lines[3], lines[4] = lines[4], lines[3]
    files[0].write_text("".join(lines))
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "reordered")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1
    assert f"FAILED at seq {moved.seq} (reorder)" in result.stdout
    assert moved.event_id in result.stdout


def test_verify_of_an_unconfigured_or_unreadable_sink_fails_clearly(cli_env: dict[str, str]) -> None:
    result = payorch(cli_env, "audit", "verify", "--sink", "s3")
    assert result.returncode == 1
    assert "sink 's3' is not configured" in result.stdout


def test_verify_names_events_appended_past_the_databases_tip(
    shipped: dict[str, str],
    cli_env: dict[str, str],
    audit_dir: Path,
    tmp_path: Path,
) -> None:
    """A forger with write access appends correctly chained events after the last one: the sink alone
    is a valid chain; the database's chain has no such positions."""
    files = tampered_copy(audit_dir, tmp_path / "appended")
    last = ChainedEvent.from_json(files[-1].read_text().splitlines()[-1])
    forged_event = dict(last.event, id="aud_" + "Z" * 26, action="refund.created", details={"amount": 99_999})
    forged = chain_events(last.hash, last.seq + 1, [forged_event, dict(forged_event, id="aud_" + "Y" * 26)])
    with files[-1].open("a") as batch:  # in the last batch ...
        batch.write(forged[0].to_json() + "\n")
    (tmp_path / "appended" / f"{forged[1].seq:012d}-{forged[1].seq:012d}.jsonl").write_text(forged[1].to_json() + "\n")
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "appended")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1, result.stdout
    assert f"FAILED at seq {last.seq + 1} (not_in_database)" in result.stdout
    assert forged[0].event_id in result.stdout
    assert f"seq {last.seq + 1}-{last.seq + 2}" in result.stdout


def test_verify_names_every_missing_batch(
    shipped: dict[str, str],
    cli_env: dict[str, str],
    audit_dir: Path,
    tmp_path: Path,
) -> None:
    files = tampered_copy(audit_dir, tmp_path / "holes")
    assert len(files) >= 3
    first, tail = (ChainedEvent.from_json(path.read_text().splitlines()[0]).seq for path in (files[0], files[-1]))
    files[0].unlink()
    files[-1].unlink()
    env = {**cli_env, "PAYORCH_AUDIT__LOCAL__DIRECTORY": str(tmp_path / "holes")}
    result = payorch(env, "audit", "verify", "--sink", "local")
    assert result.returncode == 1
    assert f"FAILED at seq {first} (gap)" in result.stdout
    assert f"also at seq {tail}-" in result.stdout
    assert "(missing_tail)" in result.stdout
