"""The pure part of the 3PL inventory sync: which warehouse, what differs, when ops hear of it."""

from __future__ import annotations

from datetime import UTC, datetime

from common.integrations.threepl_api import ThreePLStock
from common.threepl.inventory_sync import (
    InventorySyncSummary,
    SkuAdjustment,
    compare_levels,
    discrepancy_alert,
    their_levels,
    warehouse_to_sync,
)


def test_drift_both_ways_missing_and_unknown() -> None:
    ours = {"A": 10, "B": 4, "C": 7, "GONE": 3}
    theirs = {"A": 12, "B": 1, "C": 7, "NEW": 5, "STRANGER": 9}
    result = compare_levels(ours, theirs, unknown=["STRANGER"])
    # A up, B down, GONE not listed by the 3PL: it has none; NEW is ours (in the catalogue), not booked yet
    assert result.differences == [("A", 10, 12), ("B", 4, 1), ("GONE", 3, 0), ("NEW", 0, 5)]
    assert result.unknown_skus == ["STRANGER"]
    assert result.compared == 5


def test_equal_levels_change_nothing() -> None:
    assert compare_levels({"A": 3, "B": 0}, {"A": 3}).differences == []


def test_a_sku_we_book_is_never_unknown() -> None:
    result = compare_levels({"A": 1}, {"A": 2}, unknown=["A"])
    assert result.differences == [("A", 1, 2)] and result.unknown_skus == []


def test_their_levels_sum_a_sku_listed_twice() -> None:
    levels = [ThreePLStock(sku="A", on_hand=2, fulfillable=2, committed=0)] * 2
    assert their_levels(levels) == {"A": 4}


def test_units_the_3pl_shipped_before_the_order_heard_are_not_taken_twice() -> None:
    # We hold 3 of A for parcels at the 3PL; it still commits 1 of them: it shipped the other 2, and the orders'
    # commits will take them off our books. B: all it holds for us is still committed.
    levels = [
        ThreePLStock(sku="A", on_hand=7, fulfillable=6, committed=1),
        ThreePLStock(sku="B", on_hand=5, fulfillable=3, committed=2),
    ]
    assert their_levels(levels, {"A": 3, "B": 2}) == {"A": 9, "B": 5}
    assert their_levels(levels, {"C": 1}) == {"A": 7, "B": 5, "C": 1}  # C shipped: the 3PL lists none left


def test_first_warehouse_by_code_is_synced_the_others_reported() -> None:
    warehouses = {"ZZ-3PL": "shipbob", "AA-3PL": "shipbob", "OTHER": "shiphero"}
    assert warehouse_to_sync(warehouses, "shipbob") == ("AA-3PL", ["ZZ-3PL"])
    assert warehouse_to_sync(warehouses, "nobody") == (None, [])


def test_alert_above_the_threshold_lists_every_sku() -> None:
    summary = InventorySyncSummary(
        provider="shipbob",
        warehouse="W",
        synced_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        adjusted=[
            SkuAdjustment(sku="A", ours_before=10, theirs=7, delta=-3),
            SkuAdjustment(sku="B", ours_before=0, theirs=3, delta=3),
        ],
    )
    assert summary.discrepancy_units == 6
    assert summary.needs_alert(5) and not summary.needs_alert(6)
    alert = discrepancy_alert(summary, occurrence="run-1")
    assert alert.order_id == "3pl-sync-shipbob" and alert.occurrence == "run-1"
    assert "A: ours 10, the 3PL's 7 (-3)" in alert.body and "B: ours 0, the 3PL's 3 (+3)" in alert.body
    assert InventorySyncSummary.model_validate(summary.model_dump(mode="json")) == summary
