"""The ops dashboard in headless Chromium (Debian's /usr/bin/chromium through Playwright, nothing downloaded),
served by the engine's real HTTP app over a socket: refused without an ops key; after signing in, its SVG
charts show bars and points whose values are the KPIs, and the status bars link into the Temporal Web UI."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.api import FulfillmentApi
from common.api.kpi import StuckOrder
from common.models import OrderStatus
from common.store import Store
from tests.integration.http.test_kpi import deliver, wait_order
from tests.orders import order_dict

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("worker")]

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing, and CI=true requires the browser test")
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` to run it")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=str(chromium), headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


async def values(page: Any, selector: str) -> list[float]:
    found = await page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('data-value'))")
    return [float(v) for v in found]


async def test_dashboard_refuses_without_a_key_then_charts_the_kpis(
    browser: Any, engine_http: str, api: FulfillmentApi, store: Store
) -> None:
    tag = uuid.uuid4().hex[:6]
    await deliver(api, f"ORD-D{tag}A", {"MUG-RED": 1})
    await api.place_order(order_dict(f"ORD-D{tag}B", {"POSTER-A2": 1}))
    await wait_order(api, f"ORD-D{tag}B", OrderStatus.BACKORDERED)
    low = f"KPI-LOW-{tag}"
    await store.catalog.upsert_product(low, "Low stock", 100, 100)
    await store.stock.set_reorder_point(low, "LDN-1", 5)  # none on hand: below its reorder point
    ops = await store.api_keys.create(f"dash-ops-{tag}", ["ops"])
    reader = await store.api_keys.create(f"dash-read-{tag}", ["read"])

    page = await (await browser.new_context()).new_page()
    refused = await page.goto(engine_http + "/dashboard")
    assert refused is not None and refused.status == 401
    assert await page.locator("svg.chart").count() == 0
    await page.fill("input[name=key]", reader.secret)  # a read key is no ops key
    await page.click("button[type=submit]")
    assert "not a valid ops API key" in await page.inner_text("#error")

    await page.fill("input[name=key]", ops.secret)
    await page.click("button[type=submit]")
    await page.wait_for_selector("#orders-per-day svg rect.bar", state="attached")  # empty days: 0 high
    for _ in range(20):  # visibility is eventually consistent: the backordered order shows a moment later
        data = await api.dashboard()
        if data.open_by_status.get("BACKORDERED") and data.report.orders >= 2:
            break
        await asyncio.sleep(0.3)
    await page.reload()

    per_day = await values(page, "#orders-per-day rect.bar")
    assert len(per_day) == 14 and per_day[-1] >= 2
    assert int(await page.inner_text("[data-kpi=orders]")) == sum(per_day) == data.report.orders
    assert per_day == data.report.orders_per_day
    fill = data.report.fill_rate
    assert await page.inner_text("[data-kpi=fill_rate]") == ("-" if fill is None else f"{fill * 100:.1f}%")
    assert await page.locator("#on-time circle.point").count() >= 1  # today's deliveries were measured
    on_time = await values(page, "#on-time circle.point")
    assert all(0 <= v <= 100 for v in on_time)

    backordered = page.locator('#by-status rect.bar[data-label="BACKORDERED"]')
    assert float(await backordered.get_attribute("data-value") or 0) >= 1
    link = await page.locator('#by-status a:has(rect[data-label="BACKORDERED"])').get_attribute("href")
    assert link is not None and "/namespaces/default/workflows?query=OrderStatus%3D%22BACKORDERED%22" in link
    assert await page.locator("#forecast rect.bar").count() >= 1  # MUG-RED sold: it has a forecast

    assert low in await page.inner_text("#low-stock")
    await api.cancel_order(f"ORD-D{tag}B", "test done")

    await page.click("text=Sign out")
    assert await page.locator("svg.chart").count() == 0


async def test_an_order_waiting_past_its_sla_is_stuck(api: FulfillmentApi, store: Store) -> None:
    order_id = f"ORD-S{uuid.uuid4().hex[:6]}"
    await api.place_order(order_dict(order_id, {"POSTER-A2": 1}))
    await wait_order(api, order_id, OrderStatus.BACKORDERED)
    strict = FulfillmentApi(api.client, store, api.settings.model_copy(update={"pick_escalate_after": 0.5}))
    try:
        assert order_id not in [s.order_id for s in (await strict.dashboard()).stuck]  # not waited long yet
        await asyncio.sleep(1)
        stuck: dict[str, StuckOrder] = {}
        for _ in range(20):  # visibility lists it a moment after it started
            stuck = {s.order_id: s for s in (await strict.dashboard()).stuck}
            if order_id in stuck:
                break
            await asyncio.sleep(0.3)
        assert stuck[order_id].status == "BACKORDERED" and stuck[order_id].reason.startswith("BACKORDERED for")
    finally:
        await api.cancel_order(order_id, "test done")
