"""Screenshots of the dashboard's main pages for docs/dashboard.md.

The browser tests' own setup (tests/browser/harness.py): `payorch serve` on a fresh database on the
local Postgres, Debian's Chromium through Playwright, users made with `payorch users create`. It
makes a merchant with a few charges (approved, declined, authorized, one partly refunded), a
webhook endpoint that receives their events, then signs in as an operator and photographs each page.

    PYTHONPATH=src:. .venv/bin/python scripts/dashboard_screenshots.py [--out docs/dashboard]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import httpx
from playwright.async_api import Page, expect
from tests.browser.harness import Stack, chromium, sign_in, stack
from tests.fakes.merchant_endpoint import MerchantEndpoint


async def _populate(served: Stack, receiver: MerchantEndpoint) -> tuple[str, str]:
    """A merchant's few days of business: its id and the id of the charge to show."""
    merchant = await served.merchant("Acme Books")
    await served.endpoint(merchant, receiver)
    for token, amount in (("tok_visa", 2599), ("tok_mastercard", 1250), ("tok_amex", 8400), ("tok_visa", 560)):
        await served.charge(merchant, token, amount=amount)
    await served.charge(merchant, "tok_chargeDeclined", amount=4999)
    await served.charge(merchant, "tok_insufficient_funds", amount=12000)
    await served.charge(merchant, "tok_visa", amount=7300, capture=False)
    shown = await served.charge(merchant, "tok_amex", amount=4500, description="Order 1042")
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        refund = await client.post(
            "/v1/refunds", json={"charge": shown["id"], "amount": 1500}, headers=merchant.headers
        )
        refund.raise_for_status()
    await receiver.until(lambda: len(receiver.acknowledged()) >= 10, timeout=60)
    return merchant.id, str(shown["id"])


async def _shoot(page: Page, out: Path, name: str, *, full_page: bool = True) -> None:
    await page.screenshot(path=str(out / f"{name}.png"), full_page=full_page)
    print(f"{out / name}.png")  # noqa: T201 - a script's own output


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="payorch-screens-") as home, MerchantEndpoint() as receiver:
        async with stack(Path(home)) as served:
            merchant_id, charge_id = await _populate(served, receiver)
            email, password = served.create_user(email="operator@example.com")
            async with chromium(viewport=(1280, 800)) as page:
                await page.goto(f"{served.url}/dashboard/sign-in")
                await _shoot(page, out, "sign-in")
                await sign_in(page, served.url, email, password)
                await expect(page.get_by_role("heading", name="Payments")).to_be_visible()
                await page.get_by_label("Merchant").select_option(merchant_id)
                await page.get_by_role("button", name="View").click()
                await expect(page.get_by_role("link", name=charge_id)).to_be_visible()
                await _shoot(page, out, "payments")
                await page.goto(f"{served.url}/dashboard/charges/{charge_id}")
                await _shoot(page, out, "charge")
                for name in ("gateways", "webhooks", "api-keys"):
                    await page.goto(f"{served.url}/dashboard/{name}")
                    await _shoot(page, out, name, full_page=name != "webhooks")  # its top says it all
                await page.goto(f"{served.url}/dashboard/audit")
                await page.get_by_role("button", name="Verify now").click()
                await expect(page.get_by_role("status")).to_contain_text("Verified")
                await _shoot(page, out, "audit")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/dashboard"))
    target = parser.parse_args().out
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
