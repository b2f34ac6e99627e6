"""Orders whose goods sit at a 3PL, on the real stack: the dev server, the real worker, SQLite, the sandbox 3PL
(ShipBob's API, through the ShipBob adapter) and the sandbox carrier (EasyPost's, through the SDK). The 3PL's
news reaches the order by its safety-net poll here (no webhooks): the webhook tests push it.

Every test uses SKUs of its own that only the 3PL warehouse (and, where a test says so, our own) stocks, so no
other test's order is ever sent to the 3PL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.errors import Conflict
from common.models import OrderStatus, OrderView
from common.store import Store
from common.threepl.contracts import ThreePLState, reference_id
from sandbox import SandboxServers
from tests.orders import sample_order
from tests.threepl import new_sku, threepl_warehouse

pytestmark = pytest.mark.usefixtures("worker")

TPL = "TPL-SB"  # the 3PL's warehouse
OWN = "TPL-OWN"  # one of ours, for the split and re-allocation cases


@pytest.fixture(scope="module")
async def warehouses(store: Store) -> None:
    # The sample order ships to London: the 3PL's warehouse there comes first where both have the goods
    await threepl_warehouse(store, TPL, "GB", "LDN")
    await store.catalog.upsert_warehouse(OWN, "Our annex", "US", None)


@pytest.fixture
def sku(store: Store) -> Callable[[], Any]:
    return lambda: new_sku(store)


@pytest.fixture
def threepl(sandbox: SandboxServers) -> Iterator[Any]:
    sb = sandbox.threepl
    before = sb.settings()
    sb.configure(ship_after=1.0, deliver_after=1.0)
    yield sb
    sb.clear_faults()
    sb.configure(ship_after=before["ship_after"], deliver_after=before["deliver_after"])


@pytest.fixture
def fast_api(dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings) -> FulfillmentApi:
    """Orders whose 3PL parcels poll every half second, with SLAs a test can pass."""
    settings = stack_settings.model_copy(update={"threepl_poll_interval": 0.5})
    return FulfillmentApi(dev_server.client, store, settings)


@dataclass
class Placed:
    order_id: str
    api: FulfillmentApi

    async def wait(self, predicate: Callable[[OrderView], bool], what: str, attempts: int = 120) -> OrderView:
        view = await self.api.order_status(self.order_id)
        for _ in range(attempts):
            if predicate(view):
                return view
            await asyncio.sleep(0.25)
            view = await self.api.order_status(self.order_id)
        raise AssertionError(f"{self.order_id} never {what}: {view.status} {[e.note for e in view.timeline]}")

    async def status(self, status: OrderStatus) -> OrderView:
        return await self.wait(lambda v: v.status == status, f"reached {status.value}")


async def place(api: FulfillmentApi, lines: dict[str, int]) -> Placed:
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    await api.place_order(sample_order(order_id, lines))
    return Placed(order_id, api)


async def stock(store: Store, sku: str, warehouse: str, units: int) -> None:
    await store.stock.receive_stock(sku, units, warehouse)


async def level(store: Store, sku: str, warehouse: str) -> tuple[int, int]:
    (row,) = await store.stock.stock_levels(sku, warehouse)
    return row.on_hand, row.reserved


async def messages(api: FulfillmentApi, order_id: str) -> list[str]:
    return [f"{n.event}:{n.channel}" for n in await api.notifications(order_id)]


@pytest.mark.usefixtures("warehouses")
async def test_an_order_only_the_3pl_stocks_is_shipped_by_it_and_delivered(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 10)
    threepl.set_stock({code: 10})
    placed = await place(fast_api, {code: 2})

    view = await placed.status(OrderStatus.COMPLETED)

    statuses = [e.status for e in view.timeline]
    assert statuses[:4] == [
        OrderStatus.RECEIVED,
        OrderStatus.RESERVED,
        OrderStatus.SUBMITTED_TO_3PL,
        OrderStatus.ACCEPTED_BY_3PL,
    ]
    assert statuses[-2:] == [OrderStatus.DELIVERED, OrderStatus.COMPLETED]
    (parcel,) = view.shipments
    assert parcel.fulfilled_by == "shipbob" and parcel.warehouse == TPL
    assert parcel.carrier == "SandboxPost" and parcel.tracking_number
    assert parcel.pick_task_id is None  # the 3PL picked it: no task for our staff
    at_3pl = threepl.order(reference_id(placed.order_id, 1))
    assert at_3pl is not None and [i["quantity"] for i in at_3pl["products"]] == [2]
    assert await level(store, code, TPL) == (8, 0)  # committed when the 3PL shipped it
    record = await store.threepl.get(reference_id(placed.order_id, 1))
    assert record is not None and record.state in (ThreePLState.SHIPPED, ThreePLState.DELIVERED)
    sent = await messages(fast_api, placed.order_id)
    for event in ("order_confirmed", "shipped", "delivered"):
        assert sent.count(f"{event}:email") == 1, sent


@pytest.mark.usefixtures("warehouses")
async def test_an_order_split_between_our_shelf_and_the_3pl_ships_both_parts(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    ours, theirs = await sku(), await sku()
    await stock(store, ours, OWN, 5)
    await stock(store, theirs, TPL, 5)
    threepl.set_stock({theirs: 5})
    placed = await place(fast_api, {ours: 1, theirs: 1})

    view = await placed.wait(lambda v: any(p.pick_task_id for p in v.shipments), "got its pick task")
    by_warehouse = {p.warehouse: p for p in view.shipments}
    assert set(by_warehouse) == {OWN, TPL}
    assert by_warehouse[TPL].fulfilled_by == "shipbob" and by_warehouse[OWN].fulfilled_by is None
    task = by_warehouse[OWN].pick_task_id
    assert task is not None
    await fast_api.confirm_pick(task)

    view = await placed.status(OrderStatus.COMPLETED)
    assert all(p.status == OrderStatus.DELIVERED for p in view.shipments)
    assert await level(store, ours, OWN) == (4, 0) and await level(store, theirs, TPL) == (4, 0)
    sent = await messages(fast_api, placed.order_id)
    assert sent.count("shipped:email") == 2, sent  # one per parcel, as for our own parcels


@pytest.mark.usefixtures("warehouses")
async def test_a_parcel_the_3pl_rejects_is_reserved_again_from_our_own_shelf(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 5)
    await stock(store, code, OWN, 5)
    threepl.set_stock({code: 5})
    # the 3PL's warehouse is nearer, so it is asked first; it refuses the order
    threepl.refuse_next(1, "Merchant account on credit hold")
    placed = await place(fast_api, {code: 2})

    view = await placed.wait(lambda v: any(p.pick_task_id for p in v.shipments), "was re-allocated")
    rejected = next(p for p in view.shipments if p.warehouse == TPL)
    assert rejected.status == OrderStatus.CANCELLED
    assert rejected.outcome is not None and "credit hold" in rejected.outcome
    mine = next(p for p in view.shipments if p.warehouse == OWN)
    assert mine.pick_task_id is not None
    assert await level(store, code, TPL) == (5, 0)  # its reservation at the 3PL released
    await fast_api.confirm_pick(mine.pick_task_id)
    view = await placed.status(OrderStatus.COMPLETED)
    assert await level(store, code, OWN) == (3, 0)


@pytest.mark.usefixtures("warehouses")
async def test_a_rejected_parcel_with_no_stock_elsewhere_waits_for_stock(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 5)
    threepl.set_stock({code: 0})  # our books say 5, the 3PL has none: it puts the order in exception
    placed = await place(fast_api, {code: 1})

    view = await placed.status(OrderStatus.BACKORDERED)
    assert view.shipments[0].outcome is not None and view.shipments[0].outcome.startswith("rejected by shipbob")
    assert view.backordered and view.backordered[0].sku == code
    assert await level(store, code, TPL) == (5, 0)
    await fast_api.cancel_order(placed.order_id, "test over")


@pytest.mark.usefixtures("warehouses")
async def test_a_cancel_before_the_3pl_ships_is_accepted_by_the_3pl(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 5)
    threepl.set_stock({code: 5})
    threepl.configure(ship_after=120)
    placed = await place(fast_api, {code: 1})
    await placed.status(OrderStatus.ACCEPTED_BY_3PL)
    # The 3PL has the address it was given, and no hold to ask for
    with pytest.raises(Conflict, match="with shipbob for the old address"):
        await fast_api.update_address(placed.order_id, sample_order(placed.order_id).ship_to)
    with pytest.raises(Conflict, match="which has no hold; cancel instead"):
        await fast_api.hold_order(placed.order_id, "fraud check")

    view = await fast_api.cancel_order(placed.order_id, "customer changed their mind")
    view = await placed.status(OrderStatus.CANCELLED)

    at_3pl = threepl.order(reference_id(placed.order_id, 1))
    assert at_3pl is not None and at_3pl["status"] == "Cancelled"
    assert await level(store, code, TPL) == (5, 0)
    assert "shipped:email" not in await messages(fast_api, placed.order_id)
    assert any("shipbob cancelled it" in e.note for e in view.timeline)


@pytest.mark.usefixtures("warehouses")
async def test_a_cancel_after_the_3pl_shipped_is_refused_as_a_return(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 5)
    threepl.set_stock({code: 5})
    threepl.configure(ship_after=120, deliver_after=120)
    placed = await place(fast_api, {code: 1})
    await placed.status(OrderStatus.ACCEPTED_BY_3PL)
    threepl.act(reference_id(placed.order_id, 1), "ship")  # the poll has not seen it yet

    with pytest.raises(Conflict, match=r"already shipped.*request a return"):
        await fast_api.cancel_order(placed.order_id, "too late")

    view = await placed.wait(lambda v: bool(v.shipments) and v.shipments[0].tracking_number is not None, "shipped")
    assert view.shipments[0].status in (OrderStatus.IN_TRANSIT, OrderStatus.OUT_FOR_DELIVERY, OrderStatus.DELIVERED)
    assert await level(store, code, TPL) == (4, 0)


@pytest.mark.usefixtures("warehouses")
async def test_a_3pl_past_its_ship_sla_alerts_ops_and_shows_on_the_order(
    dev_server: WorkflowEnvironment, store: Store, stack_settings: Settings, threepl: Any, sku: Callable[[], Any]
) -> None:
    api = FulfillmentApi(
        dev_server.client,
        store,
        stack_settings.model_copy(update={"threepl_poll_interval": 0.5, "threepl_ship_sla": 1}),
    )
    code = await sku()
    await stock(store, code, TPL, 5)
    threepl.set_stock({code: 5})
    threepl.configure(ship_after=120, deliver_after=1)
    placed = await place(api, {code: 1})

    view = await placed.wait(lambda v: bool(v.shipments) and v.shipments[0].late_at_3pl, "was late")
    assert await late_orders(dev_server.client, placed.order_id, expected=[placed.order_id])
    alerts = [n.event for n in await api.notifications(placed.order_id) if n.key.startswith("ops:")]
    assert alerts.count("threepl_late") == 1, alerts

    threepl.act(reference_id(placed.order_id, 1), "ship")
    view = await placed.status(OrderStatus.COMPLETED)
    assert not view.shipments[0].late_at_3pl
    assert await late_orders(dev_server.client, placed.order_id, expected=[])


async def late_orders(client: Client, order_id: str, *, expected: list[str]) -> bool:
    """Whether `ThreePLLate = true` lists the order as `expected` says, once visibility caught up."""
    query = f'ThreePLLate = true AND WorkflowId = "order-{order_id}"'
    for _ in range(40):
        if [w.id.removeprefix("order-") async for w in client.list_workflows(query)] == expected:
            return True
        await asyncio.sleep(0.25)
    return False


@pytest.mark.usefixtures("warehouses")
async def test_a_hold_at_the_3pl_is_shown_to_ops_and_the_parcel_ships_once_released(
    fast_api: FulfillmentApi, store: Store, threepl: Any, sku: Callable[[], Any]
) -> None:
    code = await sku()
    await stock(store, code, TPL, 5)
    threepl.set_stock({code: 5})
    threepl.hold_next(1, "Address needs review")
    placed = await place(fast_api, {code: 1})

    view = await placed.wait(lambda v: any("holds it" in e.note for e in v.timeline), "was held")
    assert view.shipments[0].threepl_state == "on_hold"
    assert "release its hold" in (view.waiting_for or "")
    alerts = [n.event for n in await fast_api.notifications(placed.order_id) if n.key.startswith("ops:")]
    assert alerts == ["threepl_on_hold"]

    threepl.act(reference_id(placed.order_id, 1), "release")
    view = await placed.status(OrderStatus.COMPLETED)
    assert view.shipments[0].tracking_number
