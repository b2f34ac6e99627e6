"""The 3PL's stock levels against our books, on the real stack: the dev server, the real worker, SQLite and the
sandbox 3PL (ShipBob's API through the ShipBob adapter).

The sandbox 3PL's inventory is the session's: other tests' SKUs are in it too, and a sync brings them into this
module's warehouse as well. So the tests use a warehouse (SYNC-3PL) and SKUs of their own and assert only on
those; the warehouse stops being a 3PL's when the module ends, so no later sync touches it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from temporalio.client import ScheduleIntervalSpec, ScheduleOverlapPolicy
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.threepl_inventory import ThreePLInventoryActivities
from common.api import FulfillmentApi
from common.api.threepl_inventory import inventory_changed
from common.config import Settings
from common.db import tables as t
from common.errors import NotFound
from common.integrations.threepl_api import ThreePLTransientError
from common.integrations.threepl_providers import threepl_providers
from common.models import OrderStatus
from common.store import Store
from common.threepl.contracts import reference_id
from common.threepl.inventory_sync import InventorySyncSummary, SkuAdjustment, alert_subject_id
from sandbox import SandboxServers
from tests.orders import sample_order
from tests.threepl import new_sku, threepl_warehouse
from workers.reconciler import ThreePLReconciler
from workers.schedules import ensure_schedules

pytestmark = pytest.mark.usefixtures("worker", "warehouse")

WH = "SYNC-3PL"  # first by code among the session's shipbob warehouses (TPL-SB sorts after it)
PROVIDER = "shipbob"


@pytest.fixture(scope="module")
async def warehouse(store: Store) -> AsyncIterator[None]:
    await threepl_warehouse(store, WH, "NZ", None)
    yield

    async def not_a_3pl(conn: Any) -> None:
        await conn.execute(update(t.warehouses).where(t.warehouses.c.code == WH).values(kind="own", provider=None))

    await store.db.write(not_a_3pl, f"{WH} is no 3PL's any more")


async def on_hand(store: Store, sku: str) -> int:
    levels = await store.stock.stock_levels(sku, WH)
    return levels[0].on_hand if levels else 0


def mine(summary: InventorySyncSummary, *skus: str) -> dict[str, SkuAdjustment]:
    return {a.sku: a for a in summary.adjusted if a.sku in skus}


async def alerts(store: Store) -> list[str]:
    return [r.key for r in await store.notifications.notifications(alert_subject_id(PROVIDER))]


async def test_drift_up_and_down_becomes_counts_then_a_second_run_changes_nothing(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    up, down, gone = await new_sku(store), await new_sku(store), await new_sku(store)
    for sku in (up, down, gone):
        await store.stock.receive_stock(sku, 10, WH)
    sandbox.threepl.set_stock({up: 12, down: 6, gone: 0})
    before = await alerts(store)

    summary = await api.sync_threepl_inventory(PROVIDER)

    assert summary.warehouse == WH
    assert mine(summary, up, down, gone) == {
        up: SkuAdjustment(sku=up, ours_before=10, theirs=12, delta=2),
        down: SkuAdjustment(sku=down, ours_before=10, theirs=6, delta=-4),
        gone: SkuAdjustment(sku=gone, ours_before=10, theirs=0, delta=-10),
    }
    assert [await on_hand(store, s) for s in (up, down, gone)] == [12, 6, 0]
    entry = (await store.stock.stock_history(down, WH, limit=1))[0]
    assert (entry.kind, entry.delta_on_hand, entry.ref) == ("count", -4, "3pl_sync:shipbob")
    assert "3pl_sync" in entry.note
    assert await store.threepl.inventory_synced_at(PROVIDER) == summary.synced_at

    # 16 units apart, above the threshold of 5: one alert listing the SKUs
    assert summary.alert_due
    new = [k for k in await alerts(store) if k not in before]
    assert len(new) == 1 and new[0].startswith("ops:3pl-sync-shipbob:3pl_inventory_discrepancy:")

    again = await api.sync_threepl_inventory(PROVIDER)
    assert mine(again, up, down, gone) == {}
    assert [await on_hand(store, s) for s in (up, down, gone)] == [12, 6, 0]
    assert len(await store.stock.stock_history(down, WH)) == 2  # the receipt and the one count


async def test_a_small_drift_is_counted_without_an_alert(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    sku = await new_sku(store)
    await store.stock.receive_stock(sku, 4, WH)
    sandbox.threepl.set_stock({sku: 4})
    await api.sync_threepl_inventory(PROVIDER)  # whatever else drifted meanwhile is settled first
    sandbox.threepl.set_stock({sku: 3})
    before = await alerts(store)

    summary = await api.sync_threepl_inventory(PROVIDER)

    assert mine(summary, sku) == {sku: SkuAdjustment(sku=sku, ours_before=4, theirs=3, delta=-1)}
    assert not summary.alert_due
    assert await alerts(store) == before


async def test_a_sku_unknown_to_our_catalogue_is_reported_not_booked(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers
) -> None:
    stranger = f"NOT-OURS-{uuid.uuid4().hex[:6].upper()}"
    sandbox.threepl.set_stock({stranger: 5})

    summary = await api.sync_threepl_inventory(PROVIDER)

    assert stranger in summary.unknown_skus
    assert stranger not in {a.sku for a in summary.adjusted}
    assert await store.stock.stock_levels(stranger) == []


async def test_the_3pl_down_raises_a_retryable_error_and_changes_nothing(
    store: Store, sandbox: SandboxServers, stack_settings: Settings
) -> None:
    sku = await new_sku(store)
    await store.stock.receive_stock(sku, 5, WH)
    sandbox.threepl.set_stock({sku: 9})
    providers = threepl_providers(stack_settings)
    activities = ThreePLInventoryActivities(store, providers, stack_settings)
    sandbox.threepl.inject_fault("inventory", fail_next=100, status=503)
    try:
        with pytest.raises(ThreePLTransientError):
            await ActivityEnvironment().run(activities.sync_threepl_inventory, PROVIDER)
    finally:
        sandbox.threepl.clear_faults()
        for provider in providers.values():
            await provider.close()
    assert await on_hand(store, sku) == 5


async def test_the_inventory_webhook_starts_one_sync_a_minute(
    api: FulfillmentApi, store: Store, sandbox: SandboxServers, dev_server: WorkflowEnvironment
) -> None:
    sku = await new_sku(store)
    await store.stock.receive_stock(sku, 2, WH)
    sandbox.threepl.set_stock({sku: 3})
    at = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)  # its own minute: the id is this module's alone

    workflow_id, started = await inventory_changed(api.client, api.settings, PROVIDER, now=at)
    _, again = await inventory_changed(api.client, api.settings, PROVIDER, now=at + timedelta(seconds=30))

    assert (started, again) == (True, False)
    result = await dev_server.client.get_workflow_handle(workflow_id).result()
    assert sku in {a["sku"] for a in result["adjusted"]}
    assert await on_hand(store, sku) == 3
    _, now_started = await api.threepl_inventory_changed(PROVIDER)
    assert isinstance(now_started, bool)


async def test_an_unknown_provider_is_refused(api: FulfillmentApi) -> None:
    with pytest.raises(NotFound, match="no 3PL provider 'nosuch'"):
        await api.sync_threepl_inventory("nosuch")


async def test_a_schedule_per_provider_created_then_updated(
    store: Store, stack_settings: Settings, dev_server: WorkflowEnvironment
) -> None:
    schedule_id = "threepl-inventory-sync-shipbob"
    handle = dev_server.client.get_schedule_handle(schedule_id)
    try:
        assert schedule_id in await ensure_schedules(dev_server.client, store, stack_settings)
        described = await handle.describe()
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=900))]
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP

        slower = stack_settings.model_copy(update={"threepl_inventory_sync_interval": 1800.0})
        assert schedule_id in await ensure_schedules(dev_server.client, store, slower)
        described = await handle.describe()
        assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(seconds=1800))]
    finally:
        await handle.delete()  # no scheduled sync in the rest of the session


async def test_units_the_3pl_shipped_before_the_order_heard_are_taken_off_once(
    dev_server: WorkflowEnvironment, store: Store, sandbox: SandboxServers, stack_settings: Settings
) -> None:
    api = FulfillmentApi(dev_server.client, store, stack_settings.model_copy(update={"threepl_poll_interval": 3600}))
    sku = await new_sku(store)
    await store.stock.receive_stock(sku, 5, WH)
    sandbox.threepl.set_stock({sku: 5})
    pace = sandbox.threepl.settings()
    sandbox.threepl.configure(ship_after=3600)
    try:
        order_id = f"ORD-{uuid.uuid4().hex[:8]}"
        await api.place_order(sample_order(order_id, {sku: 2}))
        for _ in range(80):
            if (await api.order_status(order_id)).status == OrderStatus.ACCEPTED_BY_3PL:
                break
            await asyncio.sleep(0.25)
        assert sku not in mine(await api.sync_threepl_inventory(PROVIDER), sku)  # the 3PL commits the 2

        sandbox.threepl.act(reference_id(order_id, 1), "ship")  # the order has not heard yet
        assert sku not in mine(await api.sync_threepl_inventory(PROVIDER), sku)
        assert await on_hand(store, sku) == 5

        providers = threepl_providers(stack_settings)
        try:
            await ThreePLReconciler(dev_server.client, store, providers).round()  # now it hears, and commits
        finally:
            for provider in providers.values():
                await provider.close()
        for _ in range(80):
            if await on_hand(store, sku) == 3:
                break
            await asyncio.sleep(0.25)
        assert await on_hand(store, sku) == 3
        assert sku not in mine(await api.sync_threepl_inventory(PROVIDER), sku)
    finally:
        sandbox.threepl.configure(ship_after=pace["ship_after"])
