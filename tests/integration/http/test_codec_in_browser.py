"""The Web UI in a real browser (Debian's /usr/bin/chromium through Playwright), pointed at the codec server as
`make run` points it (`temporal server start-dev --ui-codec-endpoint .../codec`): an order's page shows no
customer data to a browser without the ops key, nor to one signed in while the UI uses the cluster-level setting
(the dev server's UI sends no credentials); once the ops person signs in at /codec/ and sets the UI's browser-level
Codec Server setting with "Include cross-origin credentials" (the steps in the README), the customer's name shows.

A dev server of its own (with the Web UI and the codec flag) and the HTTP app on a real port; the order is
placed there and never runs (no worker): its first event holds the encrypted order. Screenshots go to
FULFILL_TEST_SCREENSHOT_DIR (default: the test's tmp_path) as codec-*.png."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from common.api import FulfillmentApi
from common.config import Settings, get_settings
from common.http.app import create_app
from common.models import workflow_id_for
from common.privacy import data_converter
from common.store import Store
from tests.integration.conftest import _EmbeddedServer
from tests.integration.http.conftest import new_key
from tests.integration.notifications.test_email_in_browser import CHROMIUM, _unavailable
from tests.integration.privacy.test_customer_erasure import NAME, customer_order
from tests.integration.worker_process import DevServerProcess, eventually, free_port

pytestmark = pytest.mark.browser


class UiDevServer(DevServerProcess):
    """The dev server as `make run` starts it: with its Web UI, pointed at the codec server."""

    def __init__(self, db_file: Path, log_path: Path, ui_port: int, codec_endpoint: str) -> None:
        super().__init__(db_file, log_path)
        self.ui_port, self.codec_endpoint = ui_port, codec_endpoint

    def command(self) -> list[str]:
        headless = super().command()
        at = headless.index("--headless")
        ui = ["--ui-port", str(self.ui_port), "--ui-codec-endpoint", self.codec_endpoint]
        return [*headless[:at], *ui, *headless[at + 1 :]]


@dataclass
class UiStack:
    ui: str  # the Web UI's base URL
    codec: str  # the codec endpoint the UI was started with
    workflow_id: str
    ops_key: str


@pytest.fixture
async def ui_stack(
    api: FulfillmentApi, stack_settings: Settings, store: Store, tmp_path: Path
) -> AsyncIterator[UiStack]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    codec = f"http://127.0.0.1:{sock.getsockname()[1]}/codec"
    ui_port = free_port()
    # The default CORS origins: this Web UI's (127.0.0.1 and localhost on its port)
    app = create_app(stack_settings.model_copy(update={"temporal_ui_port": ui_port}), api)
    server = _EmbeddedServer(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    dev = UiDevServer(tmp_path / "temporal.db", tmp_path / "temporal.log", ui_port, codec)
    try:
        await dev.start()
        ui = f"http://127.0.0.1:{ui_port}"

        async def ui_answers() -> bool:
            try:
                async with httpx.AsyncClient() as http:
                    return (await http.get(f"{ui}/api/v1/settings")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(ui_answers, "the Web UI", within=30, interval=0.3)
        client = await Client.connect(dev.address, data_converter=data_converter(get_settings()))
        order_id = f"ORD-UI{uuid.uuid4().hex[:6]}"
        await FulfillmentApi(client, store, stack_settings).place_order(
            customer_order(order_id, f"C-{uuid.uuid4().hex[:6]}")
        )
        ops = (await new_key(store, "ops", name=f"ops-ui-{uuid.uuid4().hex[:4]}"))["Authorization"][len("Bearer ") :]
        yield UiStack(ui, codec, workflow_id_for(order_id), ops)
    finally:
        dev.kill()
        server.should_exit = True
        await serving
        sock.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing")
    try:
        from playwright.async_api import async_playwright
    except ImportError as err:
        _unavailable(f"playwright is not installed ({err}; it is in the dev extras)")
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_order(page: Any, stack: UiStack) -> int:
    """Open the order's page; the status of the UI's first /codec/decode, once the page shows the order."""
    async with page.expect_response(lambda r: r.url.startswith(stack.codec + "/decode"), timeout=30_000) as first:
        await page.goto(f"{stack.ui}/namespaces/default/workflows/{stack.workflow_id}")
    await page.get_by_text(stack.workflow_id).first.wait_for(timeout=30_000)
    status: int = (await first.value).status
    return status


async def visible(page: Any, text: str) -> bool:
    """Some element showing `text` is visible (a tooltip's copy of it may not be)."""
    count: int = await page.get_by_text(text, exact=True).locator("visible=true").count()
    return count > 0


async def shows_name(page: Any, within: float = 20) -> bool:
    try:
        await eventually(lambda: _has_name(page), f"{NAME} on the page", within=within, interval=0.5)
    except AssertionError:
        return False
    return True


async def _has_name(page: Any) -> bool:
    return NAME in await page.content()


async def test_the_web_ui_shows_the_customer_only_to_a_signed_in_ops_person(
    browser: Any, ui_stack: UiStack, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("FULFILL_TEST_SCREENSHOT_DIR") or tmp_path)
    page = await (await browser.new_context(viewport={"width": 1400, "height": 1000})).new_page()

    # No key: the codec server refuses, the UI shows the order with its payloads encrypted (not a broken page)
    assert await open_order(page, ui_stack) == 401
    assert not await shows_name(page, within=3)
    await page.screenshot(path=str(shots / "codec-without-key.png"), full_page=True)
    assert await visible(page, "Input") and await visible(page, "Codec Server could not connect")

    # Signed in, but the UI on the cluster-level setting: it sends no cookie, so still no name
    await page.goto(ui_stack.codec + "/")
    await page.get_by_label("Ops API key").fill(ui_stack.ops_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_text("Signed in with API key").wait_for()
    assert await open_order(page, ui_stack) == 401
    assert not await shows_name(page, within=3)

    # The README's steps: the browser-level Codec Server setting, with cross-origin credentials
    await page.locator('[data-testid^="data-encoder-status"]').first.click()
    await page.get_by_text("Use my browser setting and ignore Cluster-level setting").click()
    await page.locator("#data-encoder-endpoint-input").fill(ui_stack.codec)
    await page.get_by_text("Include cross-origin credentials").click()
    await page.get_by_role("button", name="Apply").click()
    assert await open_order(page, ui_stack) == 200
    assert await shows_name(page)
    await page.screenshot(path=str(shots / "codec-signed-in.png"), full_page=True)

    # Signed out: encrypted again
    await page.goto(ui_stack.codec + "/")
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_text("Not signed in").wait_for()
    assert await open_order(page, ui_stack) == 401
    assert not await shows_name(page, within=3)
