"""The KPI report's database side on both backends, from rows of known values: label costs (voided and return
labels left out), backorders of a re-placed order, returns, stock turns and cover rebuilt from the ledger, low
stock, and the forecast error of a steady demand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.kpi import OrderFacts, Period, kpi_report
from common.store import Store
from tests.integration.db_fixtures import BACKENDS, database_url

START = date(2026, 3, 1)
PERIOD = Period.of(START, START + timedelta(days=9))  # ten days


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    async with database_url(request.param, tmp_path) as url:
        s = await Store.open(url)
        try:
            await s.catalog.upsert_warehouse("LDN-1", "London", "GB", "LDN")
            await s.catalog.upsert_product("MUG-RED", "Mug", 1000, 100)
            await s.db.write(_rows, "kpi test rows")
            yield s
        finally:
            await s.close()


async def _rows(conn: AsyncConnection) -> None:
    now = at(START)
    mug = {"sku": "MUG-RED", "warehouse": "LDN-1"}
    await conn.execute(insert(t.stock_levels), [{**mug, "on_hand": 40, "reserved": 0, "reorder_point": 50}])
    ledger: list[dict[str, Any]] = [
        {"delta_on_hand": 100, "kind": "receipt", "at": at(START - timedelta(days=9))},
        {"delta_on_hand": -30, "kind": "commit", "at": at(START + timedelta(days=4))},  # in the period
        {"delta_on_hand": -30, "kind": "commit", "at": at(START + timedelta(days=11))},  # after it
    ]
    await conn.execute(insert(t.stock_ledger), [{**mug, "delta_reserved": 0, "note": "", **e} for e in ledger])
    # Demand: 2 a day for the 60 days before the period, 3 a day in it.
    days = [(START - timedelta(days=d), 2) for d in range(1, 61)] + [(START + timedelta(days=d), 3) for d in range(10)]
    await conn.execute(
        insert(t.reservations),
        [
            {**mug, "order_id": f"H-{i}", "quantity": q, "status": "committed", "created_at": at(d), "updated_at": now}
            for i, (d, q) in enumerate(days)
        ],
    )
    labels = [("label:O1:1", "O1", 510, "purchased"), ("label:O2:1", "O2", 700, "purchased")]
    labels += [("label:O2:2", "O2", 999, "voided"), ("return-label:RMA-1", "O1", 300, "purchased")]
    await conn.execute(
        insert(t.shipments),
        [
            {"key": k, "order_id": o, "carrier_shipment_id": k, "rate_cents": c, "status": s, "created_at": now}
            | {"updated_at": now}
            for k, o, c, s in labels
        ],
    )
    await conn.execute(insert(t.backorders), [{"order_id": "O2~2", "skus": ["MUG-RED"], "created_at": now}])
    await conn.execute(
        insert(t.rmas),
        [
            {"rma_id": "RMA-1", "order_id": "O1", "reason": "damaged", "exchange": False, "status": "REQUESTED"}
            | {"note": "", "created_at": now, "updated_at": now}
        ],
    )


async def test_report_from_known_rows(store: Store) -> None:
    promised = START + timedelta(days=3)
    orders = [
        OrderFacts("O1", at(START), "DELIVERED", promised, 1, ((at(START), "PICKING"), (at(promised), "DELIVERED"))),
        OrderFacts(
            "O2",
            at(START),
            "DELIVERED",
            promised,
            2,
            ((at(START), "PICKING"), (at(promised + timedelta(days=1)), "DELIVERED")),
        ),
    ]
    report = await kpi_report(store.db, store.reservations, PERIOD, orders)

    assert report.orders_per_day == [2] + [0] * 9
    assert (report.on_time_rate, report.on_time_measured) == (0.5, 2)  # O2 came the day after its promise
    assert report.fill_rate == pytest.approx(2 / 3) and report.backorder_rate == 0.5
    assert report.shipping_cost_per_order_cents == (510 + 700) / 2
    assert report.return_rate == 0.5 and report.return_reasons == {"damaged": 1}
    # PICKING to DELIVERED (no tracking scan in between): 3 days and 4 days
    assert (report.pick_to_ship_p50_s, report.pick_to_ship_p95_s) == (3 * 86400, 4 * 86400)
    assert report.units_shipped == 30
    assert report.inventory_turns == pytest.approx(30 / ((100 + 70) / 2))  # on hand 100 at the start, 70 at the end
    assert report.days_of_cover == pytest.approx(70 / 3)
    assert report.forecast_wape == pytest.approx(10 / 30) and report.forecast_mape == pytest.approx(1 / 3)
