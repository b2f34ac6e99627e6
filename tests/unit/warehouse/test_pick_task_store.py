"""Pick tasks on a real SQLite file: create, confirm, a short pick's books."""

from __future__ import annotations

from datetime import UTC

import pytest

from common.catalog.contracts import UnknownSkuError
from common.db.errors import StoreError
from common.store import Store
from common.warehouse.contracts import PickTaskClosed, PickTaskNotFound
from tests.unit.conftest import level_of

# ---------------------------------------------------------------------------------------------------------
# Pick tasks


async def test_pick_task_create_is_idempotent_and_confirm(shop: Store) -> None:
    task = await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 2), ("TEE-M", 1)])
    assert task.id.startswith("PICK-") and len(task.id) == 13 and task.id[5:] == task.id[5:].upper()
    assert (task.status, task.confirmed_at, task.lines) == ("open", None, [("MUG-RED", 2), ("TEE-M", 1)])
    assert await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 2), ("TEE-M", 1)]) == task
    retry = await shop.picks.create("ORD-1", 2, "LDN-1", [("MUG-RED", 2)])
    assert retry.id != task.id
    assert await shop.picks.get(task.id) == task
    assert await shop.picks.get("PICK-NOPE") is None
    assert [x.id for x in await shop.picks.open_tasks()] == [task.id, retry.id]
    assert await shop.picks.open_tasks(older_than_s=3600) == []
    assert len(await shop.picks.open_tasks(older_than_s=0)) == 2

    confirmed = await shop.picks.confirm(task.id)
    assert confirmed.status == "confirmed" and confirmed.confirmed_at is not None
    assert confirmed.confirmed_at.tzinfo is UTC
    assert await shop.picks.confirm(task.id) == confirmed  # idempotent
    assert await shop.picks.get(task.id) == confirmed
    assert [x.id for x in await shop.picks.open_tasks()] == [retry.id]

    cancelled = await shop.picks.cancel(retry.id)
    assert cancelled.status == "cancelled" and await shop.picks.cancel(retry.id) == cancelled
    with pytest.raises(PickTaskClosed, match="cancelled"):
        await shop.picks.confirm(retry.id)
    with pytest.raises(PickTaskClosed, match="confirmed"):
        await shop.picks.cancel(task.id)
    with pytest.raises(PickTaskNotFound, match="PICK-NOPE"):
        await shop.picks.confirm("PICK-NOPE")
    assert [x.parcel_no for x in await shop.picks.for_order("ORD-1")] == [1, 2]
    assert await shop.picks.open_tasks() == []


async def test_pick_task_rejects_bad_input(shop: Store) -> None:
    with pytest.raises(ValueError):
        await shop.picks.create("ORD-1", 1, "LDN-1", [])
    with pytest.raises(ValueError):
        await shop.picks.create("ORD-1", -1, "LDN-1", [("MUG-RED", 1)])
    with pytest.raises(UnknownSkuError):
        await shop.picks.create("ORD-1", 1, "LDN-1", [("NOPE", 1)])
    assert await shop.picks.for_order("ORD-1") == []


async def test_short_pick_corrects_on_hand_and_the_order_reservation_once(shop: Store) -> None:
    await shop.stock.receive_stock("MUG-RED", 5, "LDN-1")
    await shop.stock.receive_stock("TEE-M", 5, "LDN-1")
    await shop.reservations.reserve("ORD-1", [("MUG-RED", 3), ("TEE-M", 1)], prefer_country="GB", prefer_region="LDN")
    task = await shop.picks.create("ORD-1", 1, "LDN-1", [("MUG-RED", 3), ("TEE-M", 1)])
    before = level_of(await shop.stock.stock_levels(), "MUG-RED", "LDN-1")

    with pytest.raises(StoreError, match="has no line for POSTER-A2"):
        await shop.picks.confirm(task.id, {"POSTER-A2": 1})
    with pytest.raises(StoreError, match="must be between 1 and the 3 to pick"):
        await shop.picks.confirm(task.id, {"MUG-RED": 4})
    assert (await shop.picks.get(task.id)).status == "open"  # type: ignore[union-attr]

    short = await shop.picks.confirm(task.id, {"MUG-RED": 2})
    assert (short.status, short.short) == ("confirmed", {"MUG-RED": 2})
    assert await shop.picks.confirm(task.id, {"MUG-RED": 2}) == short  # the same confirmation again: no-op
    after = level_of(await shop.stock.stock_levels(), "MUG-RED", "LDN-1")
    # Two units were never on the shelf: on hand and the order's reservation drop by 2, available is unchanged.
    assert (after.on_hand, after.reserved, after.available) == (
        before.on_hand - 2,
        before.reserved - 2,
        before.available,
    )
    held = {r.sku: r.quantity for r in await shop.reservations.reservations("ORD-1") if r.status == "held"}
    assert held == {"MUG-RED": 1, "TEE-M": 1}
    [entry] = [e for e in await shop.stock.stock_history("MUG-RED") if e.kind == "adjustment" and e.ref == task.id]
    assert (entry.delta_on_hand, entry.delta_reserved) == (-2, -2)
