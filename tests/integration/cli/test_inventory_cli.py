"""`fulfill inventory` and `fulfill catalog` on a temporary SQLite file, through typer's CliRunner: the
database-only commands need no Temporal. `receive --po` (which also wakes backordered orders through
Temporal) runs as the real `fulfill` command against the integration stack."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from sqlalchemy import update
from typer.testing import CliRunner

from common.cli.catalog import catalog_app
from common.cli.inventory import inventory_app
from common.config import get_settings
from common.db import tables as t
from common.inventory.contracts import StockLevel
from common.store import Store
from tests.integration.conftest import Cli

app = typer.Typer()
app.add_typer(inventory_app, name="inventory")
app.add_typer(catalog_app, name="catalog")

WAREHOUSES = "code,name,country,region\nLDN-1,London,GB,LDN\nNYC-1,New York,us,NY\n"
PRODUCTS = 'sku,name,price,weight,dimensions\nMUG-RED,Red mug,12.00,350,10x8x12\nTEE-M,"T-shirt, M",18,180,\n'
STOCK = "sku,warehouse,on_hand\nMUG-RED,LDN-1,20\nMUG-RED,NYC-1,5\nTEE-M,LDN-1,8\n"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}"
    monkeypatch.setenv("FULFILL_DATABASE_URL", url)
    monkeypatch.setenv("FULFILL_SMTP_PORT", "1")  # no relay: low-stock emails stay pending
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def _run_db(url: str, fn: Any) -> Any:
    async def go() -> Any:
        async with await Store.open(url) as store:
            return await fn(store)

    return asyncio.run(go())


def fulfill(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _json(result: Any) -> Any:
    assert result.exit_code == 0, (result.output, result.stderr)
    return json.loads(result.stdout)


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture
def shop(db: str, tmp_path: Path) -> str:
    for command, text in (
        ("catalog warehouses", WAREHOUSES),
        ("catalog import", PRODUCTS),
        ("inventory import", STOCK),
    ):
        result = fulfill(*command.split(), _write(tmp_path, command.replace(" ", "-") + ".csv", text))
        assert result.exit_code == 0, (result.output, result.stderr)
    return db


# ---------------------------------------------------------------------------------------------------------
# Imports


def test_catalog_and_stock_import(db: str, tmp_path: Path) -> None:
    assert _json(fulfill("catalog", "warehouses", _write(tmp_path, "w.csv", WAREHOUSES), "--json")) == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
    }
    result = fulfill("catalog", "import", _write(tmp_path, "p.csv", PRODUCTS))
    assert result.exit_code == 0 and "imported products: 2 new, 0 updated, 0 unchanged" in result.stdout
    result = fulfill("inventory", "import", _write(tmp_path, "s.csv", STOCK))
    assert result.exit_code == 0 and "3 new" in result.stdout
    catalogue = _json(fulfill("catalog", "show", "--json"))
    assert [(p["sku"], p["price_cents"], p["weight_grams"], p["dimensions_mm"]) for p in catalogue["products"]] == [
        ("MUG-RED", 1200, 350, [100, 80, 120]),
        ("TEE-M", 1800, 180, None),
    ]
    assert [(w["code"], w["country"], w["region"]) for w in catalogue["warehouses"]] == [
        ("LDN-1", "GB", "LDN"),
        ("NYC-1", "US", "NY"),
    ]
    ledger = _run_db(db, lambda s: s.stock.ledger())
    assert [(e.sku, e.warehouse, e.delta_on_hand, e.kind, e.ref) for e in ledger] == [
        ("MUG-RED", "LDN-1", 20, "adjustment", "import:s.csv"),
        ("MUG-RED", "NYC-1", 5, "adjustment", "import:s.csv"),
        ("TEE-M", "LDN-1", 8, "adjustment", "import:s.csv"),
    ]
    # Importing the same file again changes nothing.
    assert _json(fulfill("inventory", "import", str(tmp_path / "s.csv"), "--json")) == {
        "created": 0,
        "updated": 0,
        "unchanged": 3,
    }


def test_bad_catalog_import_lists_every_row_and_writes_nothing(shop: str, tmp_path: Path) -> None:
    before = _run_db(shop, lambda s: s.catalog.products())
    bad = "sku,name,price,weight,dimensions\nMUG-RED,Mug,13.00,350,\nBOOK,Book,abc,600,\nPEN,Pen,1,-2,1x2\n"
    result = fulfill("catalog", "import", _write(tmp_path, "bad.csv", bad))
    assert result.exit_code == 2
    assert "3 problems, nothing was imported" in result.stderr
    assert "row 3: price: not a number 'abc'" in result.stderr
    assert "row 4: weight: must be a positive number of grams, got '-2'" in result.stderr
    assert "row 4: dimensions: expected length x width x height in cm like '10x8x12', got '1x2'" in result.stderr
    assert _run_db(shop, lambda s: s.catalog.products()) == before  # MUG-RED's good row was not written either

    missing = fulfill("catalog", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    wh = fulfill("catalog", "warehouses", _write(tmp_path, "wh.csv", "code,name,country\nPAR-1,Paris,France\n"))
    assert wh.exit_code == 2 and "row 2: country" in wh.stderr


def test_a_warehouse_a_3pl_runs_is_imported_and_shown(db: str, tmp_path: Path) -> None:
    text = "code,name,country,region,kind,provider\nSB-RENO,ShipBob Reno,US,NV,3pl,shipbob\n"
    assert _json(fulfill("catalog", "warehouses", _write(tmp_path, "w.csv", text), "--json"))["created"] == 1
    catalogue = _json(fulfill("catalog", "show", "--json"))
    assert [(w["code"], w["kind"], w["provider"]) for w in catalogue["warehouses"]] == [("SB-RENO", "3pl", "shipbob")]
    shown = fulfill("catalog", "show")
    assert shown.exit_code == 0 and "3pl" in shown.stdout and "shipbob" in shown.stdout
    # Taking it back from the 3PL is one more row; a 3PL this engine does not speak to is refused
    back = "code,name,country,region,kind\nSB-RENO,Reno annex,US,NV,own\n"
    assert _json(fulfill("catalog", "warehouses", _write(tmp_path, "back.csv", back), "--json"))["updated"] == 1
    unknown = "code,name,country,kind,provider\nX-1,X,US,3pl,acme\n"
    refused = fulfill("catalog", "warehouses", _write(tmp_path, "x.csv", unknown))
    assert refused.exit_code == 2 and "row 2: provider: unknown 3PL 'acme'" in refused.stderr
    catalogue = _json(fulfill("catalog", "show", "--json"))
    assert [(w["code"], w["kind"], w["provider"]) for w in catalogue["warehouses"]] == [("SB-RENO", "own", None)]


def test_bad_stock_import_writes_nothing(shop: str, tmp_path: Path) -> None:
    before = _run_db(shop, lambda s: s.stock.ledger())
    text = "sku,warehouse,on_hand\nMUG-RED,LDN-1,1\nMUG-RED,MARS-1,3\nNOPE,LDN-1,x\n"
    result = fulfill("inventory", "import", _write(tmp_path, "bad.csv", text))
    assert result.exit_code == 2
    assert "row 4: sku: 'NOPE'" not in result.stderr  # 'NOPE' is a valid SKU spelling...
    assert "row 4: on_hand: not a number 'x'" in result.stderr  # ...but x is no count
    text = "sku,warehouse,on_hand\nMUG-RED,LDN-1,1\nMUG-RED,MARS-1,3\nNOPE,LDN-1,2\n"
    result = fulfill("inventory", "import", _write(tmp_path, "bad.csv", text))
    assert result.exit_code == 2
    assert "row 3: warehouse: unknown warehouse 'MARS-1' (known: LDN-1, NYC-1)" in result.stderr
    assert "row 4: sku: unknown SKU 'NOPE'" in result.stderr
    assert _run_db(shop, lambda s: s.stock.ledger()) == before


# ---------------------------------------------------------------------------------------------------------
# The real-time view, expected receipts, history


def test_show_expect_and_history(shop: str) -> None:
    async def orders(store: Store) -> None:
        await store.reservations.reserve("ORD-1", [("MUG-RED", 4)], prefer_country="GB", prefer_region="LDN")
        await store.reservations.reserve("ORD-2", [("MUG-RED", 3)], prefer_country="GB", prefer_region="LDN")

    _run_db(shop, orders)
    result = fulfill(
        "inventory", "expect", "MUG-RED", "30", "--warehouse", "LDN-1", "--eta", "2030-01-05", "--po", "PO-7"
    )
    assert result.exit_code == 0 and "PO-7: 30 x MUG-RED expected at LDN-1, due 2030-01-05" in result.stdout
    assert fulfill("inventory", "reorder-point", "MUG-RED", "5", "--warehouse", "LDN-1").exit_code == 0

    rows = _json(fulfill("inventory", "show", "--sku", "MUG-RED", "--json"))
    # 7 units reserved today, none before: EWMA over 60 days = 0.3 * 7 = 2.1 a day; 13 available -> 6.2 days
    assert rows == [
        {
            "sku": "MUG-RED",
            "warehouse": "LDN-1",
            "on_hand": 20,
            "reserved": 7,
            "available": 13,
            "incoming": 30,
            "next_eta": "2030-01-05",
            "reorder_point": 5,
            "daily_demand": 2.1,
            "days_of_cover": 6.2,
        },
        {
            "sku": "MUG-RED",
            "warehouse": "NYC-1",
            "on_hand": 5,
            "reserved": 0,
            "available": 5,
            "incoming": 0,
            "next_eta": None,
            "reorder_point": None,
            "daily_demand": 0.0,
            "days_of_cover": None,
        },
    ]
    table = fulfill("inventory", "show", "--warehouse", "LDN-1")
    assert table.exit_code == 0
    assert "days of cover" in table.stdout and "6.2" in table.stdout and "(eta 2030-01-05)" in table.stdout
    assert [o["id"] for o in _json(fulfill("inventory", "incoming", "--json"))] == ["PO-7"]

    history = _json(fulfill("inventory", "history", "MUG-RED", "--warehouse", "LDN-1", "--json"))
    assert [(h["kind"], h["delta_on_hand"], h["delta_reserved"], h["ref"], h["on_hand_after"]) for h in history] == [
        ("reservation", 0, 3, "ORD-2", 20),
        ("reservation", 0, 4, "ORD-1", 20),
        ("adjustment", 20, 0, "import:inventory-import.csv", 20),
    ]
    assert len(_json(fulfill("inventory", "history", "MUG-RED", "--limit", "1", "--json"))) == 1
    text = fulfill("inventory", "history", "MUG-RED")
    assert text.exit_code == 0 and "reservation" in text.stdout and "ORD-2" in text.stdout
    unknown = fulfill("inventory", "history", "NOPE")
    assert unknown.exit_code == 2 and "unknown SKU 'NOPE'" in unknown.stderr
    bad_eta = fulfill("inventory", "expect", "MUG-RED", "3", "--warehouse", "LDN-1", "--eta", "soon")
    assert bad_eta.exit_code == 2 and "eta: expected a date like 2025-12-24, got 'soon'" in bad_eta.stderr


# ---------------------------------------------------------------------------------------------------------
# Counts and adjustments


def test_count_releases_newest_orders_and_prints_them(shop: str) -> None:
    async def orders(store: Store) -> None:
        for i in range(1, 5):
            await store.reservations.reserve(f"ORD-{i}", [("MUG-RED", 4)], prefer_country="GB", prefer_region="LDN")

    _run_db(shop, orders)  # LDN-1: 20 on hand, 16 reserved
    result = fulfill("inventory", "count", "MUG-RED", "--warehouse", "LDN-1", "--counted", "9", "--reason", "flood")
    assert result.exit_code == 0, result.stderr
    assert "MUG-RED @ LDN-1: counted 9, was 20 (-11); on hand 9, reserved 8, available 1" in result.stdout
    assert "released the reservations of 2 order(s), newest first; they wait for stock again: ORD-4, ORD-3" in (
        " ".join(result.stdout.split())
    )
    [entry] = [e for e in _run_db(shop, lambda s: s.stock.ledger()) if e.kind == "count"]
    assert (entry.delta_on_hand, entry.note) == (-11, "count: flood")

    change = _json(fulfill("inventory", "count", "MUG-RED", "--warehouse", "LDN-1", "--counted", "4", "--json"))
    assert (change["released_orders"], change["on_hand"], change["reserved"]) == (["ORD-2"], 4, 4)

    before = _run_db(shop, lambda s: s.stock.stock_levels())
    for args, message in (
        (["--warehouse", "LDN-1", "--counted", "-1"], "counted must be a number of units >= 0"),
        (["--warehouse", "MARS-1", "--counted", "1"], "unknown warehouse 'MARS-1'"),
    ):
        bad = fulfill("inventory", "count", "MUG-RED", *args)
        assert bad.exit_code == 2 and message in bad.stderr, bad.stderr
    bad = fulfill("inventory", "count", "NOPE", "--warehouse", "LDN-1", "--counted", "1")
    assert bad.exit_code == 2 and "unknown SKU 'NOPE'" in bad.stderr
    assert _run_db(shop, lambda s: s.stock.stock_levels()) == before


def test_adjust(shop: str) -> None:
    result = fulfill("inventory", "adjust", "TEE-M", "-3", "--warehouse", "LDN-1", "--reason", "moth damage")
    assert result.exit_code == 0, result.stderr
    assert "TEE-M @ LDN-1: adjusted by -3, was 8 (-3); on hand 5" in result.stdout
    too_many = fulfill("inventory", "adjust", "TEE-M", "-30", "--warehouse", "LDN-1", "--reason", "x")
    assert too_many.exit_code == 2 and "would leave -25 on hand" in too_many.stderr
    assert _run_db(shop, lambda s: s.stock.stock_levels("TEE-M")) == [StockLevel("TEE-M", "LDN-1", 5, 0, 5)]


# ---------------------------------------------------------------------------------------------------------
# Forecast and reorder points


def test_forecast_table_json_charts_and_apply(shop: str, tmp_path: Path) -> None:
    # Four days of orders at LDN-1: 4, 6, 2, 8 mugs (oldest first), the last today.
    async def history(store: Store) -> None:
        await store.stock.receive_stock("MUG-RED", 40, "LDN-1")
        now = datetime.now(UTC)
        for days_ago, qty in ((3, 4), (2, 6), (1, 2), (0, 8)):
            order = f"ORD-{days_ago}"
            await store.reservations.reserve(order, [("MUG-RED", qty)], prefer_country="GB", prefer_region="LDN")
            await store.reservations.commit_reservation(order)
            async with store.db.engine.begin() as conn:
                await conn.execute(
                    update(t.reservations)
                    .where(t.reservations.c.order_id == order)
                    .values(created_at=now - timedelta(days=days_ago))
                )

    _run_db(shop, history)  # LDN-1: 60 - 20 = 40 on hand
    rows = _json(fulfill("inventory", "forecast", "--sku", "MUG-RED", "--days", "4", "--json"))
    ldn = next(r for r in rows if r["warehouse"] == "LDN-1")
    # See test_inventory_forecast: mean 5.074, sd 2.2527; 7 days lead time:
    #   35.518 + 1.6448536 * 2.252671 * sqrt(7) = 35.518 + 9.803 -> reorder point 46; 40 available <= 46:
    #   order up to 46 + 5.074 * 14 = 117.04, i.e. 78 units; 40 / 5.074 = 7.9 days of cover
    assert ldn == {
        "sku": "MUG-RED",
        "warehouse": "LDN-1",
        "available": 40,
        "incoming": 0,
        "history_days": 4,
        "demand_model": "ewma",  # four days: too short for a model
        "demand_per_day": 5.074,
        "demand_std_dev": 2.253,
        "lead_time_days": 7,
        "lead_time_demand": 35.518,
        "safety_stock": 9.803,
        "reorder_point": 46,
        "reorder_point_set": None,
        "days_of_cover": 7.9,
        "order_quantity": 78,
    }
    nyc = next(r for r in rows if r["warehouse"] == "NYC-1")
    assert (nyc["demand_per_day"], nyc["reorder_point"], nyc["days_of_cover"], nyc["order_quantity"]) == (0, 0, None, 0)

    charts = tmp_path / "charts"
    result = fulfill(
        "inventory", "forecast", "--days", "4", "--service-level", "0.99", "--chart-dir", str(charts), "--apply"
    )
    assert result.exit_code == 0, result.stderr
    assert "service level 0.99 (z 2.326)" in result.stdout
    assert sorted(p.name for p in charts.iterdir()) == ["MUG-RED.png", "TEE-M.png"]
    assert (charts / "MUG-RED.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reorder points stored for 3 SKU/warehouse pair(s)" in result.stdout
    # 40 available is below the stored reorder point: a low-stock crossing, ops cannot be emailed here.
    assert "low stock: MUG-RED @ LDN-1: 40 available" in result.stderr
    assert "could not email ops" in result.stderr
    shown = _json(fulfill("inventory", "show", "--sku", "MUG-RED", "--warehouse", "LDN-1", "--json"))
    assert shown[0]["reorder_point"] == 50  # 99%: 35.518 + 2.3263479 * 2.252671 * sqrt(7) = 49.38 -> 50
    pending = _run_db(shop, lambda s: s.stock.low_stock_crossings(pending_only=True))
    assert [(c.sku, c.warehouse) for c in pending] == [("MUG-RED", "LDN-1")]

    for args, message in (
        (["--service-level", "1.5"], "service level must be between 0 and 1"),
        (["--alpha", "0"], "alpha must be in (0, 1]"),
        (["--sku", "NOPE"], "unknown SKU 'NOPE'"),
    ):
        bad = fulfill("inventory", "forecast", *args)
        assert bad.exit_code == 2 and message in bad.stderr, bad.stderr


def test_reorder_point_command(shop: str) -> None:
    assert fulfill("inventory", "reorder-point", "TEE-M", "3", "--warehouse", "LDN-1").exit_code == 0
    assert _json(fulfill("inventory", "show", "--sku", "TEE-M", "--json"))[0]["reorder_point"] == 3
    result = fulfill("inventory", "reorder-point", "TEE-M", "--warehouse", "LDN-1", "--clear")
    assert result.exit_code == 0 and "reorder point cleared" in result.stdout
    assert _json(fulfill("inventory", "show", "--sku", "TEE-M", "--json"))[0]["reorder_point"] is None
    for args in ([], ["3", "--clear"]):
        bad = fulfill("inventory", "reorder-point", "TEE-M", *args, "--warehouse", "LDN-1")
        assert bad.exit_code == 2 and "either a reorder point" in bad.stderr


# ---------------------------------------------------------------------------------------------------------
# Through the real `fulfill` command and the integration stack


@pytest.mark.usefixtures("worker")
async def test_receive_against_a_purchase_order(cli: Cli, store: Store) -> None:
    expect = await asyncio.to_thread(
        cli, "inventory", "expect", "BOOK-ADA", "7", "--warehouse", "NYC-1", "--po", "PO-CLI-1", "--eta", "2030-03-01"
    )
    assert expect.returncode == 0, expect.stderr
    [position] = await store.stock.inventory_positions("BOOK-ADA", "NYC-1")
    before = position.on_hand
    assert position.incoming == 7

    wrong = await asyncio.to_thread(cli, "inventory", "receive", "MUG-RED", "7", "--po", "PO-CLI-1")
    assert wrong.returncode == 2 and "is for BOOK-ADA, not MUG-RED" in wrong.stderr

    received = await asyncio.to_thread(cli, "inventory", "receive", "BOOK-ADA", "7", "--po", "PO-CLI-1")
    assert received.returncode == 0, received.stderr
    assert "(purchase order PO-CLI-1 received)" in received.stdout
    [position] = await store.stock.inventory_positions("BOOK-ADA", "NYC-1")
    assert (position.on_hand, position.incoming) == (before + 7, 0)
    again = await asyncio.to_thread(cli, "inventory", "receive", "BOOK-ADA", "7", "--po", "PO-CLI-1")
    assert again.returncode == 2 and "already received" in again.stderr
