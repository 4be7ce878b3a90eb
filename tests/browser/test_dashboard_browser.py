"""The dashboard in a real browser: Debian's Chromium driven by Playwright against `payorch serve`.

Every wait is on a condition (Playwright's auto-waiting ``expect``, or the webhook receiver's
arrivals); nothing sleeps and nothing is timed.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect
from tests.browser.harness import LOCKOUT_THRESHOLD, Stack, chromium, sign_in, stack
from tests.fakes.merchant_endpoint import MerchantEndpoint

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BLOCKING_IMPACTS = ("serious", "critical")


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with stack(tmp_path_factory.mktemp("dashboard")) as built:
        yield built


@pytest.fixture(scope="module")
def receiver() -> Iterator[MerchantEndpoint]:
    with MerchantEndpoint() as endpoint:
        yield endpoint


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with chromium() as opened:
        expect.set_options(timeout=20_000)
        yield opened


async def test_find_a_charge_by_last4_refund_part_and_redeliver_its_webhook(
    served: Stack, receiver: MerchantEndpoint, page: Page
) -> None:
    merchant = await served.merchant("Browser books")
    await served.endpoint(merchant, receiver)
    await served.charge(merchant, "tok_visa", amount=2000)
    wanted = await served.charge(merchant, "tok_amex", amount=1500)
    email, password = served.create_user(merchant=merchant.id)

    await sign_in(page, served.url, email, password)
    await expect(page.get_by_role("heading", name="Payments")).to_be_visible()
    await page.get_by_label("Card last 4").fill("8431")
    await page.get_by_role("button", name="Search").click()
    rows = page.locator("table.list tbody tr")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text("amex ···· 8431")
    await page.get_by_role("link", name=wanted["id"]).click()

    await expect(page.get_by_role("heading", name=f"Charge {wanted['id']}")).to_be_visible()
    await expect(page.locator("#timeline li")).to_have_count(1)
    await expect(page.locator("#timeline li.attempt")).to_contain_text("approved")
    await page.get_by_label(re.compile("^Refund amount")).fill("4.00")
    await page.get_by_role("button", name="Refund", exact=True).click()
    await expect(page.get_by_role("status")).to_contain_text("Refund sent.")
    await expect(page.locator("#timeline li")).to_have_count(2)
    await expect(page.locator("#timeline li.refund")).to_contain_text("4.00 USD")
    await expect(page.locator("#timeline li.refund")).to_contain_text("succeeded")
    await expect(page.locator("#amount-refunded")).to_have_text("4.00 USD")
    await expect(page.locator("#audit-events")).to_contain_text("refund.succeeded")

    def about(event_type: str) -> list[bytes]:
        """The webhook-ids of the wanted charge's events of this type the receiver acknowledged."""
        return [
            arrival.webhook_id.encode()
            for arrival in receiver.acknowledged()
            if f'"type":"{event_type}"'.encode() in arrival.body and wanted["id"].encode() in arrival.body
        ]

    await receiver.until(lambda: bool(about("charge.succeeded") and about("charge.refunded")))
    await page.reload()
    delivery = page.locator("tr[data-delivery]", has_text="charge.succeeded")
    await expect(delivery).to_contain_text("succeeded")
    delivery_id = await delivery.get_attribute("data-delivery")
    assert len(about("charge.succeeded")) == 1
    await delivery.get_by_role("button", name=f"Redeliver {delivery_id}").click()
    await expect(page.get_by_role("status")).to_contain_text(f"Delivery {delivery_id} queued again.")
    await receiver.until(lambda: len(about("charge.succeeded")) == 2)  # sent again, with the same webhook-id
    assert len(set(about("charge.succeeded"))) == 1
    await page.reload()
    await expect(page.locator(f'tr[data-delivery="{delivery_id}"]')).to_contain_text("succeeded")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("status")).to_contain_text("You are signed out.")
    await page.goto(f"{served.url}/dashboard/charges/{wanted['id']}")
    await expect(page.get_by_role("heading", name="Sign in to payorch")).to_be_visible()


async def test_a_form_posted_without_its_csrf_token_is_refused(served: Stack, page: Page) -> None:
    merchant = await served.merchant()
    charge = await served.charge(merchant, "tok_visa", amount=1000)
    email, password = served.create_user(merchant=merchant.id)
    await sign_in(page, served.url, email, password)
    await page.goto(f"{served.url}/dashboard/charges/{charge['id']}")
    await page.locator("form[action$='/refund'] input[name='csrf_token']").evaluate("input => input.remove()")
    async with page.expect_response(lambda response: response.url.endswith("/refund")) as answer:
        await page.get_by_role("button", name="Refund", exact=True).click()
    assert (await answer.value).status == 403
    await expect(page.get_by_role("alert")).to_contain_text("security token is missing or expired")
    await page.goto(f"{served.url}/dashboard/charges/{charge['id']}")
    await expect(page.locator("#timeline li.refund")).to_have_count(0)
    await expect(page.locator("#amount-refunded")).to_have_text("0.00 USD")


async def test_another_merchants_charge_url_is_not_found(served: Stack, page: Page) -> None:
    mine, theirs = await served.merchant(), await served.merchant()
    their_charge = await served.charge(theirs, "tok_visa")
    email, password = served.create_user(merchant=mine.id)
    await sign_in(page, served.url, email, password)
    await expect(page.get_by_role("heading", name="Payments")).to_be_visible()
    answer = await page.goto(f"{served.url}/dashboard/charges/{their_charge['id']}")
    assert answer is not None
    assert answer.status == 404
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text(f"No such charge: '{their_charge['id']}'")


async def test_repeated_failed_sign_ins_lock_the_user_until_an_operator_unlocks(served: Stack, page: Page) -> None:
    merchant = await served.merchant()
    email, password = served.create_user(merchant=merchant.id)
    for _ in range(LOCKOUT_THRESHOLD - 1):
        await sign_in(page, served.url, email, "not the password")
        await expect(page.get_by_role("alert")).to_have_text("Incorrect email or password.")
    await sign_in(page, served.url, email, "not the password")
    await expect(page.get_by_role("alert")).to_contain_text("this account is locked")
    await sign_in(page, served.url, email, password)  # the right password, while locked
    await expect(page.get_by_role("alert")).to_contain_text("this account is locked")
    assert served.payorch("users", "unlock", "--email", email) == f"unlocked {email}\n"
    await sign_in(page, served.url, email, password)
    await expect(page.get_by_role("heading", name="Payments")).to_be_visible()


async def test_the_main_pages_have_no_serious_accessibility_violations(served: Stack, page: Page) -> None:
    merchant = await served.merchant("Accessible goods")
    charge = await served.charge(merchant, "tok_mastercard", amount=4200)
    await served.charge(merchant, "tok_chargeDeclined", amount=999)
    email, password = served.create_user()  # an operator: every page, the Audit one too
    axe = Axe()
    await page.goto(f"{served.url}/dashboard/sign-in")
    pages = {"sign-in": await axe.run(page)}
    await sign_in(page, served.url, email, password)
    await expect(page.get_by_role("heading", name="Payments")).to_be_visible()
    await page.get_by_label("Merchant").select_option(merchant.id)
    await page.get_by_role("button", name="View").click()
    await expect(page.get_by_role("link", name=charge["id"])).to_be_visible()
    for name in ("payments", f"charges/{charge['id']}", "gateways", "webhooks", "api-keys", "audit"):
        answer = await page.goto(f"{served.url}/dashboard/{name}")
        assert answer is not None
        assert answer.status == 200, name
        pages[name] = await axe.run(page)
    blocking = {
        name: [f"{v['id']} ({v['impact']}): {v['help']}" for v in result.response["violations"]]
        for name, result in pages.items()
        if any(v["impact"] in BLOCKING_IMPACTS for v in result.response["violations"])
    }
    assert blocking == {}
    assert all(result.response["testEngine"]["name"] == "axe-core" for result in pages.values())
