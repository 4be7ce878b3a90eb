"""The browser tests' setup, shared with scripts/dashboard_screenshots.py: Debian's Chromium driven
by Playwright (its bundled driver; no browser is downloaded), and `payorch serve` on a database of
its own, with users made by `payorch users create` as a person would.

Chromium runs headless with a fresh profile and the flags that keep it off the network (this
machine has none beyond loopback): no background networking, component updates, sync or QUIC.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Page, async_playwright
from tests.conftest import make_settings, scratch_database
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.fakes.merchant_endpoint import MerchantEndpoint
from tests.integration.served_payorch import Served, environment, serve

from payorch.runtime import Runtime

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCKOUT_THRESHOLD = 3
SERVED_ENV = {
    # The dispatcher (webhooks) and the audit shipper run in the served process, as `make run` does.
    "PAYORCH_RUN_BACKGROUND_IN_API": "true",
    "PAYORCH_WEBHOOKS__ALLOW_LOOPBACK_ENDPOINTS": "true",
    "PAYORCH_WEBHOOKS__POLL_INTERVAL_SECONDS": "0.2",
    "PAYORCH_AUDIT__MAX_BATCH_AGE_SECONDS": "0",
    "PAYORCH_RATELIMIT__ENABLED": "false",
    "PAYORCH_DASHBOARD__LOCKOUT_THRESHOLD": str(LOCKOUT_THRESHOLD),
}


@dataclass
class Stack:
    """A served payorch on its own database, and a Runtime of the test's on the same database."""

    served: Served
    database_url: str
    home: Path
    runtime: Runtime

    @property
    def url(self) -> str:
        return self.served.url

    def payorch(self, *args: str) -> str:
        """Run a ``payorch`` command on the stack's database; what it printed."""
        command = [str(Path(sys.executable).with_name("payorch")), *args]
        done = subprocess.run(
            command,
            env=environment(self.database_url, self.home),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def create_user(self, *, merchant: str | None = None, email: str | None = None) -> tuple[str, str]:
        """``payorch users create``: (email, the password it printed once)."""
        address = email or f"person-{secrets.token_hex(4)}@example.com"
        target = ["--merchant", merchant] if merchant else ["--operator"]
        printed = self.payorch("users", "create", "--email", address, *target)
        found = re.fullmatch(r"(du_\w+) (\S+) (\S+)\n", printed)
        assert found is not None, printed
        return found.group(2), found.group(3)

    async def merchant(self, name: str = "Test merchant") -> MerchantFixture:
        return await create_merchant(self.runtime, name)

    async def charge(self, merchant: MerchantFixture, token: str = "tok_visa", **body: Any) -> dict[str, Any]:  # noqa: S107 - a sandbox test token
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            answer = await client.post(
                "/v1/charges",
                json=charge_body(token, **body),
                headers={**merchant.headers, "Idempotency-Key": secrets.token_hex(8)},
            )
        assert answer.status_code in (201, 402), answer.text
        created: dict[str, Any] = answer.json()
        if answer.status_code == 402:  # declined: the error names the charge
            return {"id": created["error"]["charge"], "status": "failed"}
        return created

    async def endpoint(self, merchant: MerchantFixture, receiver: MerchantEndpoint) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            answer = await client.post(
                "/v1/webhook_endpoints", json={"url": receiver.url, "enabled_events": ["*"]}, headers=merchant.headers
            )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created


@contextmanager
def served_stack(home: Path) -> Iterator[tuple[Served, str]]:
    """`payorch serve` on a fresh database (dropped afterwards), background work in the process."""
    with scratch_database("payorch_browser", partitions=2) as url, serve(url, home, SERVED_ENV) as served:
        yield served, url


@asynccontextmanager
async def stack(home: Path) -> AsyncIterator[Stack]:
    with served_stack(home) as (served, url):
        runtime = await Runtime.build(make_settings(url), url)
        try:
            yield Stack(served, url, home, runtime)
        finally:
            await runtime.aclose()


@asynccontextmanager
async def chromium(viewport: tuple[int, int] = (1280, 900)) -> AsyncIterator[Page]:
    """A page in Debian's Chromium with a profile of its own, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="payorch-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": viewport[0], "height": viewport[1]},
                env={**os.environ, "HOME": profile},
            )
            try:
                yield context.pages[0] if context.pages else await context.new_page()
            finally:
                await context.close()


async def sign_in(page: Page, base_url: str, email: str, password: str) -> None:
    await page.goto(f"{base_url}/dashboard/sign-in")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
