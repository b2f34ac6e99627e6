"""Finding 7: one JSON style for every --json: timestamps ISO-8601 in UTC ending in Z, objects rather than
pairs, every parcel rather than the last one's copy."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.conftest import fulfill, ok

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
LOOKS_LIKE_A_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:")


def _strings(data: Any) -> Iterator[str]:
    if isinstance(data, dict):
        for value in data.values():
            yield from _strings(value)
    elif isinstance(data, list):
        for value in data:
            yield from _strings(value)
    elif isinstance(data, str):
        yield data


def _assert_times_are_iso_z(data: Any) -> None:
    times = [s for s in _strings(data) if LOOKS_LIKE_A_TIME.match(s)]
    assert times, data
    assert all(ISO_Z.match(t) for t in times), times


@pytest.mark.usefixtures("engine")
def test_picks_give_lines_as_objects_and_times_in_utc_with_z() -> None:
    picks = json.loads(ok(fulfill("warehouse", "picks", "--json")))
    assert picks[0]["lines"] == [{"sku": "POSTER-A2", "quantity": 1}, {"sku": "BOOK-ADA", "quantity": 2}]
    assert picks[0]["created_at"] == "2026-12-01T08:51:52.160000Z"
    _assert_times_are_iso_z(picks)


@pytest.mark.usefixtures("engine")
def test_order_list_started_at_is_iso_with_z() -> None:
    orders = json.loads(ok(fulfill("order", "list", "--json")))
    assert orders[0]["started_at"] == "2026-12-01T08:51:52.160000Z"
    _assert_times_are_iso_z(orders)


@pytest.mark.usefixtures("engine")
def test_order_status_gives_every_parcel_and_no_copy_of_the_last() -> None:
    view = json.loads(ok(fulfill("order", "status", "ORD-RET-7", "--json")))
    for last_parcels_copy in ("warehouse", "pick_task_id", "carrier", "tracking_number", "tracking_url"):
        assert last_parcels_copy not in view
    assert [(p["warehouse"], p["tracking_number"]) for p in view["shipments"]] == [
        ("LDN-1", "SBX0000000000000001"),
        ("NYC-1", "SBX0000000000000002"),
    ]
    _assert_times_are_iso_z(view)
    _assert_times_are_iso_z(json.loads(ok(fulfill("order", "returns", "ORD-RET-7", "--json"))))


def test_stock_json_times_are_iso_with_z(shop: str) -> None:
    ok(fulfill("inventory", "expect", "TEE-M", "4", "--warehouse", "LDN-1", "--eta", "2030-01-05", "--po", "PO-9"))
    _assert_times_are_iso_z(json.loads(ok(fulfill("inventory", "history", "TEE-M", "--json"))))
    incoming = json.loads(ok(fulfill("inventory", "incoming", "--json")))
    assert incoming[0]["eta"] == "2030-01-05"
    _assert_times_are_iso_z(incoming)
