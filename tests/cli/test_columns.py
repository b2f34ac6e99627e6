"""Finding 4: at 80 columns the key columns (SKUs, warehouses, ids, times) stay whole; notes wrap instead."""

from __future__ import annotations

import pytest

from tests.cli.conftest import StandInApi, assert_readable, fulfill, ok

DEMO_SKUS = ("BOOK-ADA", "MUG-BLUE", "MUG-RED", "POSTER-A2", "TEE-L", "TEE-M")


def test_inventory_show_keeps_skus_and_warehouses_whole(shop: str) -> None:
    ok(fulfill("inventory", "expect", "BOOK-ADA", "5", "--warehouse", "NYC-1", "--eta", "2026-12-24", "--po", "PO-7"))
    output = ok(fulfill("inventory", "show"))
    assert_readable(output, *DEMO_SKUS, "warehouse", "available", "2026-12-24")


def test_inventory_history_keeps_times_and_refs_whole_and_wraps_the_note(shop: str) -> None:
    reason = "damaged in a flood at the loading dock, see ticket 42 and the photos in the shared drive"
    ok(fulfill("inventory", "adjust", "BOOK-ADA", "-2", "--warehouse", "NYC-1", "--reason", reason))
    output = ok(fulfill("inventory", "history", "BOOK-ADA"))
    # the time may stand as the date over the time, but neither is cut
    assert_readable(output, "NYC-1", "LDN-1", "adjustment", "demo-seed", "damaged", "drive")
    assert output.count("2026-") >= 3 and ":" in output


def test_inventory_forecast_and_incoming_keep_their_ids_whole(shop: str) -> None:
    assert_readable(ok(fulfill("inventory", "forecast")), *DEMO_SKUS, "LDN-1", "NYC-1")
    ok(fulfill("inventory", "expect", "POSTER-A2", "9", "--warehouse", "LDN-1", "--po", "PO-2026-12-SUPPLIER-ACME"))
    assert_readable(ok(fulfill("inventory", "incoming")), "PO-2026-12-SUPPLIER-ACME", "POSTER-A2", "LDN-1")


def test_catalog_show_keeps_skus_whole(shop: str) -> None:
    assert_readable(ok(fulfill("catalog", "show")), *DEMO_SKUS, "LDN-1", "NYC-1")


@pytest.mark.usefixtures("engine")
def test_order_status_keeps_parcels_tracking_and_statuses_whole() -> None:
    output = ok(fulfill("order", "status", "ORD-RET-7"))
    assert_readable(
        output,
        "ORD-RET-7",
        "SBX0000000000000001",
        "SBX0000000000000002",
        "OUT_FOR_DELIVERY",
        "DELIVERY_EXCEPTION",
        "RETURN_IN_TRANSIT",
        "BOOK-ADA x2",
    )


def test_one_parcel_tracking_url_is_never_wrapped(engine: StandInApi) -> None:
    engine.view = engine.view.model_copy(update={"shipments": engine.view.shipments[1:]})
    output = ok(fulfill("order", "status", "ORD-RET-7"))
    assert any("http://127.0.0.1:8026/track/SBX0000000000000002" in line for line in output.splitlines())


@pytest.mark.usefixtures("engine")
def test_order_returns_keeps_rmas_and_tracking_whole() -> None:
    output = ok(fulfill("order", "returns", "ORD-RET-7"))
    assert_readable(
        output,
        "RMA-ORD-RET-7-1",
        "RMA-ORD-RET-7-2",
        "REFUND_FAILED",
        "SBX0000000000000003",
        "SBX0000000000000004",
        "ORD-RET-7-X1",
        "25.00",
    )


@pytest.mark.usefixtures("engine")
def test_picks_and_order_list_keep_ids_whole() -> None:
    picks = ok(fulfill("warehouse", "picks"))
    assert_readable(picks, "PICK-ORD-RET-7-2", "ORD-RET-7", "NYC-1", "POSTER-A2 x1", "BOOK-ADA x2")
    assert_readable(ok(fulfill("order", "list")), "ORD-RET-7", "RETURN_IN_TRANSIT", "C-42", "2026-12-01")


@pytest.mark.usefixtures("engine")
def test_next_hints_keep_the_command_on_one_line() -> None:
    output = ok(fulfill("order", "return", "ORD-RET-7", "--line", "POSTER-A2=1", "--reason", "wrong_item"))
    hint = "next: fulfill warehouse receive-return RMA-ORD-RET-7-2 --line SKU=QTY:resellable|damaged"
    assert len(hint) > 80 and hint in output.splitlines()


# Finding 13, in the table: the title says what the history really covers.
def test_the_forecast_table_says_what_the_data_covers(shop: str) -> None:
    output = ok(fulfill("inventory", "forecast", "--sku", "TEE-M"))
    assert "60-day window (no orders in it)" in output
