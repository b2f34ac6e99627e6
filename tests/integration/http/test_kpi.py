"""KPIs of a known mix of orders on the real stack (Temporal dev server, worker, SQLite, sandboxes): one on time
and returned, one delivered after its promise, one backordered and cancelled. The session's other tests place
orders too, so the exact figures are checked over these three orders' facts; the CLI and HTTP views are checked
to count them and to refuse bad ranges."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.db import tables as t
from common.kpi import Period, kpi_report
from common.models import OrderStatus, OrderView
from common.store import Store
from tests.integration.conftest import Cli
from tests.orders import order_dict

pytestmark = pytest.mark.usefixtures("worker")


async def wait_order(api: FulfillmentApi, order_id: str, *statuses: OrderStatus) -> OrderView:
    view = None
    for _ in range(300):
        view = await api.order_status(order_id)
        if view.status in statuses:
            return view
        await asyncio.sleep(0.2)
    raise AssertionError(f"{order_id} never reached {statuses}: {view}")


async def deliver(api: FulfillmentApi, order_id: str, lines: dict[str, int], **changes: object) -> None:
    await api.place_order(order_dict(order_id, lines, **changes))
    view = await wait_order(api, order_id, OrderStatus.PICKING)
    assert view.pick_task_id
    await api.confirm_pick(view.pick_task_id)
    await wait_order(api, order_id, OrderStatus.DELIVERED, OrderStatus.COMPLETED)  # COMPLETED: no return window


@pytest.fixture(scope="module")
async def mix(dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings) -> dict[str, str]:
    """Places the three orders; their ids by role."""
    api = FulfillmentApi(dev_server.client, store, stack_settings.model_copy(update={"return_window": 600.0}))
    tag = uuid.uuid4().hex[:6]
    ids = {"on_time": f"ORD-K{tag}A", "late": f"ORD-K{tag}B", "backordered": f"ORD-K{tag}C"}
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    await asyncio.gather(
        deliver(api, ids["on_time"], {"MUG-RED": 2}),
        deliver(api, ids["late"], {"MUG-RED": 1}, promised_delivery=yesterday),
    )
    await api.request_return(ids["on_time"], {"MUG-RED": 1}, "no_longer_needed")
    await api.place_order(order_dict(ids["backordered"], {"POSTER-A2": 1, "MUG-RED": 1}))
    await wait_order(api, ids["backordered"], OrderStatus.BACKORDERED)
    await api.cancel_order(ids["backordered"], "customer gave up")
    return ids


def today() -> Period:
    now = datetime.now(UTC).date()
    return Period.of(now, now)


async def test_each_kpi_is_what_the_orders_did(api: FulfillmentApi, store: Store, mix: dict[str, str]) -> None:
    ours = set(mix.values())
    facts = []
    for _ in range(50):  # visibility is eventually consistent
        facts = [f for f in await api.period_orders(today()) if f.order_id in ours]
        if len(facts) == 3:
            break
        await asyncio.sleep(0.2)
    report = await kpi_report(store.db, store.reservations, today(), facts)

    assert report.orders == 3 and sum(report.orders_per_day) == 3
    assert (report.on_time_rate, report.on_time_measured) == (0.5, 2)  # the late one was promised yesterday
    assert report.fill_rate == pytest.approx(3 / 4)  # 4 order lines, POSTER-A2 was short
    assert report.backorder_rate == pytest.approx(1 / 3)
    assert report.return_rate == 0.5 and report.return_reasons == {"no_longer_needed": 1}
    p50, p95 = report.pick_to_ship_p50_s, report.pick_to_ship_p95_s
    assert p50 is not None and p95 is not None and 0 < p50 <= p95
    sh = t.shipments.c
    rows = await store.db.read(
        select(sh.rate_cents).where(sh.order_id.in_(ours), sh.status == "purchased", sh.key.like("label:%"))
    )
    assert len(rows) == 2
    assert report.shipping_cost_per_order_cents == sum(r.rate_cents for r in rows) / 2
    assert report.orders_by_status["CANCELLED"] == 1


async def test_the_cli_reports_the_period_and_refuses_a_backwards_one(cli: Cli, mix: dict[str, str]) -> None:
    day = datetime.now(UTC).date().isoformat()
    done = await asyncio.to_thread(cli, "kpi", "--from", day, "--to", day, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["orders"] >= 3 and report["start"] == day
    assert 0 < report["fill_rate"] <= 1 and report["return_reasons"].get("no_longer_needed", 0) >= 1

    table = await asyncio.to_thread(cli, "kpi", "--from", day, "--to", day)
    assert table.returncode == 0 and "on-time delivery" in table.stdout and "fill rate" in table.stdout

    backwards = await asyncio.to_thread(cli, "kpi", "--from", "2026-03-05", "--to", "2026-03-01")
    assert backwards.returncode == 2 and "before" in backwards.stderr
    not_a_day = await asyncio.to_thread(cli, "kpi", "--from", "2026-02-30", "--to", "2026-03-01")
    assert not_a_day.returncode == 2


async def test_http_kpi_for_readers_only_with_422_for_a_bad_range(
    http: httpx.AsyncClient, reader: dict[str, str], intake: dict[str, str], mix: dict[str, str]
) -> None:
    day = datetime.now(UTC).date().isoformat()
    ok = await http.get("/v1/kpi", params={"from": day, "to": day}, headers=reader)
    assert ok.status_code == 200, ok.text
    assert ok.json()["orders"] >= 3 and len(ok.json()["orders_per_day"]) == 1

    refused = await http.get("/v1/kpi", params={"from": day, "to": day}, headers=intake)
    assert refused.status_code == 403
    backwards = await http.get("/v1/kpi", params={"from": "2026-03-05", "to": "2026-03-01"}, headers=reader)
    assert backwards.status_code == 422 and backwards.headers["content-type"] == "application/problem+json"
    assert "before" in backwards.json()["detail"]
    garbled = await http.get("/v1/kpi", params={"from": "yesterday", "to": day}, headers=reader)
    assert garbled.status_code == 422 and garbled.headers["content-type"] == "application/problem+json"


async def test_dashboard_needs_an_ops_key(
    http: httpx.AsyncClient, ops: dict[str, str], reader: dict[str, str], mix: dict[str, str]
) -> None:
    assert (await http.get("/dashboard")).status_code == 401
    assert (await http.get("/dashboard", headers=reader)).status_code == 401
    page = await http.get("/dashboard", headers=ops)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text.count('<svg class="chart"') == 4 and 'class="bar"' in page.text
