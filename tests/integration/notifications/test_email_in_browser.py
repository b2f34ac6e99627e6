"""The shipped email as a customer sees it: its HTML part, taken from the MIME message EmailSender builds, opened
in headless Chromium (Debian's /usr/bin/chromium through Playwright; nothing is downloaded). The brand's header,
the text and the inlined styles show, and the tracking link leads to the tracking page.

Without /usr/bin/chromium the test is skipped, except under CI=true, where that is a failure (.ci/run installs
the package). The screenshot goes to FULFILL_TEST_SCREENSHOT_DIR (default: the test's tmp_path) as
email-shipped.png, to look at."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from common.config import Settings
from common.integrations.email import EmailSender
from common.messages import MessageRenderer
from common.models import Channel, Customer, NotificationEvent, NotifyRequest

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
TRACKING_URL = "https://track.example/SBX1"
BRAND = "rgb(31, 78, 121)"  # Brand().colour, #1f4e79


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}, and CI=true requires the browser test (.ci/run installs Debian's chromium)")
    pytest.skip(f"{reason}: `apt-get install chromium` (Debian's package) to run it")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as err:
        _unavailable(f"playwright is not installed ({err}; it is in the dev extras)")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


def sent_html(request: NotifyRequest) -> str:
    """The HTML part of the email as it goes over SMTP: rendered, built into MIME, parsed back."""
    settings = Settings()
    message = MessageRenderer.from_settings(settings).render(request, Channel.EMAIL)
    assert message.subject is not None and message.html is not None
    wire = EmailSender(settings).build(
        to=request.customer.email,
        subject=message.subject,
        text=message.text,
        html=message.html,
        message_id="<notify.ORD-1001.shipped.email@fulfill>",
        headers={"X-Order-Id": request.order_id},
    )
    parsed = message_from_bytes(wire, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    part = parsed.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def test_the_shipped_email_in_a_browser(browser: Any, tmp_path: Path) -> None:
    customer = Customer(id="C-42", name="Ada Lovelace", email="ada@example.com")
    request = NotifyRequest(
        order_id="ORD-1001",
        event=NotificationEvent.SHIPPED,
        customer=customer,
        channels=[Channel.EMAIL],
        context={"carrier": "SandboxPost", "tracking_number": "SBX1", "tracking_url": TRACKING_URL},
    )
    page = await browser.new_page(viewport={"width": 760, "height": 700})
    fetched: list[str] = []

    async def tracking_page(route: Any) -> None:
        fetched.append(route.request.url)
        if route.request.url == TRACKING_URL:
            await route.fulfill(content_type="text/html", body="<h1>SBX1: in transit</h1>")
        else:  # an email fetches nothing from anywhere
            await route.abort()

    await page.route("**/*", tracking_page)
    html = sent_html(request)
    await page.set_content(html)

    # The brand's header, its colour from the header's own style attribute (no <style> left)
    header = page.locator("td.header")
    assert (await header.inner_text()).strip() == "Fulfillment"
    assert await header.evaluate("e => getComputedStyle(e).backgroundColor") == BRAND
    assert "background-color" in (await header.get_attribute("style") or "")
    assert await page.evaluate("document.querySelectorAll('style, link').length") == 0
    # The greeting and the message as the text part says them, and a visible, styled button
    body = await page.locator("body").inner_text()
    assert "Hello Ada Lovelace," in body
    assert "Order ORD-1001 is on its way with SandboxPost. Tracking number SBX1: " + TRACKING_URL in body
    assert "The Fulfillment team" in body and "about your order ORD-1001" in body
    button = page.get_by_role("link", name="Track your parcel")
    assert await button.is_visible()
    assert await button.evaluate("e => getComputedStyle(e).backgroundColor") == BRAND
    assert await button.evaluate("e => getComputedStyle(e).color") == "rgb(255, 255, 255)"
    assert await page.locator("div.preview").is_hidden()  # the inbox preview text only

    shots = Path(os.environ.get("FULFILL_TEST_SCREENSHOT_DIR") or tmp_path)
    await page.screenshot(path=str(shots / "email-shipped.png"), full_page=True)

    # The tracking link works: it opens the tracking page
    assert fetched == []
    await button.click()
    await page.wait_for_url(TRACKING_URL)
    assert await page.locator("h1").inner_text() == "SBX1: in transit"
    assert fetched == [TRACKING_URL]
    await page.set_content(html)
    await page.get_by_role("link", name=TRACKING_URL).click()  # the one in the sentence
    await page.wait_for_url(TRACKING_URL)
    assert fetched == [TRACKING_URL, TRACKING_URL]
