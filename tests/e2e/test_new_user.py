"""A new user: `payorch serve` in an empty directory with no environment at all, then a charge with
the key it prints."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"payorch serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("payorch serve never became ready")


def test_serve_in_an_empty_directory_then_charge(tmp_path: Path) -> None:
    payorch = Path(sys.executable).with_name("payorch")
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        # No settings at all; this checkout's sources when the suite runs from one.
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(payorch), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        printed = log_path.read_text()
        key = re.search(r"Test API key: (sk_test_\w+)", printed)
        assert key is not None, printed
        assert f"curl -s {url}/v1/charges" in printed
        assert (tmp_path / ".payorch" / "pgdata").is_dir()
        response = httpx.post(
            f"{url}/v1/charges",
            headers={"Authorization": f"Bearer {key.group(1)}", "Idempotency-Key": "first-charge"},
            json={"amount": 1050, "currency": "usd", "payment_method": {"tokens": {"sandbox": "tok_visa"}}},
            timeout=30,
        )
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "succeeded"
        assert response.json()["amount"] == 1050
        key_file = tmp_path / ".payorch" / "demo-api-key"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        _sign_in_to_the_dashboard(url, printed)
        login_file = tmp_path / ".payorch" / "demo-dashboard-login"
        assert oct(login_file.stat().st_mode & 0o777) == "0o600"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log_path.read_text()


def _sign_in_to_the_dashboard(url: str, printed: str) -> None:
    """The banner names the dashboard and the demo user's password; they sign in."""
    login = re.search(rf"Dashboard: {re.escape(url)}/dashboard  \(sign in as (\S+) with password (\S+)\)", printed)
    assert login is not None, printed
    with httpx.Client(base_url=url, timeout=30) as browser:
        form = browser.get("/dashboard/sign-in")
        token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', form.text)
        assert token is not None, form.text
        fields = {"csrf_token": token.group(1), "email": login.group(1), "password": login.group(2)}
        signed_in = browser.post("/dashboard/sign-in", data=fields)
        assert signed_in.status_code == 303, signed_in.text
        payments = browser.get(signed_in.headers["location"])
        assert payments.status_code == 200
        assert "ch_" in payments.text  # the charge just made, on the demo merchant's Payments page
