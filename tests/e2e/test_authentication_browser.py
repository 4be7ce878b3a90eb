"""The sandbox's 3-D Secure challenge in a real browser: Playwright drives Debian's Chromium
(``/usr/bin/chromium``, never a browser of Playwright's own) against ``payorch serve`` (uvicorn) on
loopback. The customer opens the charge's ``next_action`` URL, presses "Complete authentication",
and lands on the merchant's ``return_url``; the merchant's backend then confirms the charge, which
has succeeded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.async_api import async_playwright
from tests.factories import charge_body, create_merchant
from tests.integration.served_payorch import free_port, serve

from payorch.runtime import Runtime

pytestmark = pytest.mark.e2e

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


class _MerchantPage(BaseHTTPRequestHandler):
    """The merchant's own checkout page the customer comes back to."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>Shop</title><h1 id='thanks'>Thank you for your order</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test asserts what the browser shows."""


@contextmanager
def merchant_site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MerchantPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_customer_completes_the_challenge_in_chromium(
    database_url: str, runtime: Runtime, tmp_path: Path
) -> None:
    merchant = await create_merchant(runtime)
    port = free_port()
    gateways = [{"name": "sandbox", "kind": "sandbox", "public_url": f"http://127.0.0.1:{port}"}]
    env = {"PAYORCH_GATEWAYS": json.dumps(gateways)}
    with merchant_site() as shop, serve(database_url, tmp_path, env, port=port) as served:
        return_url = f"{shop}/paid?order=1001"
        async with httpx.AsyncClient(base_url=served.url, headers=merchant.headers, timeout=30) as api:
            created = await api.post(
                "/v1/charges", json=charge_body("tok_threeDSecureRequired", return_url=return_url)
            )
            assert created.status_code == 202, created.text
            charge = created.json()
            url = charge["next_action"]["redirect_to_url"]["url"]
            assert url.startswith(f"{served.url}/sandbox/authenticate/")

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = await browser.new_page()
                    await page.goto(url)
                    assert "Authenticate this payment" in await page.content()
                    await page.get_by_role("button", name="Complete authentication").click()
                    await page.wait_for_url(f"{shop}/paid?**")
                    await page.locator("#thanks").wait_for()
                    landed = page.url
                finally:
                    await browser.close()

            confirmed = await api.post(f"/v1/charges/{charge['id']}/confirm")

    query = parse_qs(urlsplit(landed).query)
    assert query == {"order": ["1001"], "charge": [charge["id"]], "authentication": ["succeeded"]}
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"
    assert confirmed.json()["authentication"]["liability_shifted"] is True
