"""The failure-handling review (../shared/REVIEW-failure-handling.md) and the new-user findings, finding by
finding, on the order workflow: the outside world (test_order_workflow's FakeWorld, under the real activity
names) fails the way the finding describes, and the time-skipping server lets hours and days of it pass.

Each test is named after its finding and asserts what a user of the engine would notice: the order's status,
what it waits for, the stock, the labels, the money and the messages.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

import tests.workflows.orders.test_order_workflow as base
from common.models import (
    Address,
    CancelRequest,
    HoldRequest,
    Order,
    OrderStatus,
    OrderView,
    ReservationReleased,
    ResolveDeliveryRequest,
    RetryRequest,
    TrackingStatus,
)
from common.temporal import PICK_OVERDUE, WAITING_FOR
from tests.orders import sample_order
from workflows.order import OrderWorkflow

HOUR, DAY, POLICY = base.HOUR, base.DAY, base.POLICY
FakeWorld = base.FakeWorld


def new_order(lines: dict[str, int] | None = None) -> Order:
    return sample_order(f"ORD-{uuid.uuid4().hex[:8]}", lines=lines or {"MUG-RED": 1})


async def view_when(
    env: WorkflowEnvironment, handle: WorkflowHandle, test: Callable[[OrderView], bool], step: float = 60
) -> OrderView:
    view = None
    for _ in range(300):
        view = await handle.query(OrderWorkflow.status)
        if test(view):
            return view
        await env.sleep(step)
    raise AssertionError(f"the order never got there: {view}")


async def sleep_until_after_label(env: WorkflowEnvironment, fake: FakeWorld, hours: float) -> None:
    left = fake.bought[1] + timedelta(hours=hours) - await env.get_current_time()
    await env.sleep(max(left.total_seconds(), 1))


async def refusal(update: object) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await update  # type: ignore[misc]
    cause = info.value.cause
    return cause.message if isinstance(cause, ApplicationError) else str(cause)


def notes(view: OrderView) -> str:
    return " | ".join(e.note for e in view.timeline)


HAPPY_MESSAGES = [
    ("order_confirmed", "email"),
    ("order_confirmed", "sms"),
    ("shipped", "email"),
    ("shipped", "sms"),
    ("out_for_delivery", "sms"),
    ("delivered", "email"),
    ("delivered", "sms"),
]


# ------------------------------------------------------------------------- 1: outages never fail an order


async def test_finding_1_a_carrier_outage_of_two_hours_leaves_the_order_waiting_then_it_ships(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        await fake.outage("buy_label", hours=2)
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        waiting = await view_when(env, handle, lambda v: bool(v.provider_waits))
        listed = (await handle.describe()).typed_search_attributes.get(WAITING_FOR)
        view = await handle.result()

    assert waiting.status == OrderStatus.PACKED
    assert waiting.waiting_for and "the carrier" in waiting.waiting_for
    assert [w.provider for w in waiting.provider_waits] == ["carrier"] and "503" in waiting.provider_waits[0].error
    assert listed == ["carrier"]  # ops: WaitingFor="carrier"
    assert view.status == OrderStatus.COMPLETED and view.provider_waits == []
    assert fake.labels_bought == 1 and fake.calls["buy_label"] > 5  # retried through the outage, bought once
    assert (await handle.describe()).typed_search_attributes.get(WAITING_FOR) is None


async def test_finding_1_a_database_outage_of_ten_minutes_waits_instead_of_failing(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        await fake.outage("reserve_stock", "create_pick_task", hours=1 / 6)
        handle = await base.start(env.client, new_order())
        waiting = await view_when(env, handle, lambda v: bool(v.provider_waits))
        await base.confirm_pick(env, handle)
        view = await handle.result()

    assert waiting.provider_waits[0].provider == "database"
    assert view.status == OrderStatus.COMPLETED
    assert fake.committed == {"MUG-RED": 1} and fake.available == {"MUG-RED": 4}


async def test_finding_1_a_messaging_outage_never_holds_up_the_order_and_every_message_goes_out_once_in_order(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        await fake.outage("notify_customer", hours=3)
        handle = await base.start(env.client, new_order())
        picking = await base.wait_for_status(env, handle, OrderStatus.PICKING)  # went on without its notice
        sent_meanwhile = list(fake.messages)
        await base.confirm_pick(env, handle)
        view = await handle.result()

    assert picking.messages_waiting == 2 and sent_meanwhile == []  # the confirmation, by email and by SMS
    assert view.status == OrderStatus.COMPLETED
    for channel in ("email", "sms"):  # each channel's messages once, in the order they happened
        assert [m for m in fake.messages if m[1] == channel] == [m for m in HAPPY_MESSAGES if m[1] == channel]


async def test_finding_1_an_ops_alert_that_can_never_be_sent_does_not_fail_the_order(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    fake.broken["alert_ops"] = "SmtpRefused"
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        view = await base.wait_for_status(env, handle, OrderStatus.PICKING)
        await env.sleep(5 * HOUR)  # past the pick SLA: the ops alert fails for good
        overdue = await handle.query(OrderWorkflow.status)
        await handle.signal(OrderWorkflow.pick_confirmed, view.pick_task_id or "")
        done = await handle.result()

    assert "alert ops: pick_overdue: not sent" in notes(overdue)
    assert done.status == OrderStatus.COMPLETED


async def test_finding_1_a_cancel_during_a_database_outage_releases_the_stock_once_it_is_back(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 2}))
        await base.wait_for_status(env, handle, OrderStatus.PICKING)
        await fake.outage("release_shipment", "release_stock", "cancel_pick_task", "cancel_pick_tasks", hours=0.5)
        update = await handle.start_update(
            OrderWorkflow.cancel,
            CancelRequest(reason="customer changed mind"),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        await env.sleep(HOUR)
        await update.result()
        view = await handle.result()

    assert view.status == OrderStatus.CANCELLED
    assert fake.available == {"MUG-RED": 5}  # given back, although the database was down when ops cancelled
    assert "FAILED to" not in notes(view)
    assert fake.messages.count(("cancelled", "email")) == 1


async def test_finding_1_an_error_retrying_cannot_fix_parks_the_order_in_failed_and_retry_resumes_it(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    fake.broken["buy_label"] = "CarrierRejected"
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        failed = await base.wait_for_status(env, handle, OrderStatus.FAILED)
        await base.eventually(env, lambda: "order_failed" in fake.ops_alerts)
        del fake.broken["buy_label"]
        await handle.execute_update(OrderWorkflow.retry, RetryRequest(note="carrier account fixed"))
        view = await handle.result()

    assert failed.waiting_for and failed.waiting_for.startswith("ops: retry")
    assert fake.available == {"MUG-RED": 4}  # still reserved while it waits for ops
    assert view.status == OrderStatus.COMPLETED and fake.labels_bought == 1
    assert "retried by ops: carrier account fixed" in notes(view)


async def test_finding_1_a_failed_order_nobody_retries_is_undone_and_closes_failed_with_its_view(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    fake.broken["create_pick_task"] = "UnknownWarehouseError"
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()  # three days for ops (failed_wait_s), then given up

    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    final = OrderView.model_validate(cause.details[0])  # readable without a worker
    assert final.status == OrderStatus.FAILED
    assert fake.available == {"MUG-RED": 5}  # the reservation went back
    assert ("fulfilment_failed", "email") in fake.messages and ("cancelled", "email") not in fake.messages


# ----------------------------------------------------------- 2: a cancel or hold never undoes a real shipment


async def test_finding_2_a_cancel_after_the_first_scan_between_hourly_polls_is_refused_and_the_stock_committed(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})  # in transit 4.8 h after the label; polls hourly
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.LABELED)
        await sleep_until_after_label(env, fake, 4.9)  # scanned 0.1 h ago; the next poll is 0.1 h away
        reason = await refusal(handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason="too late")))
        after = await handle.query(OrderWorkflow.status)
        view = await handle.result()

    assert "already shipped" in reason and "request a return" in reason
    assert after.status == OrderStatus.IN_TRANSIT  # what the carrier said is the news
    assert fake.voided_labels == [] and fake.committed == {"MUG-RED": 1}
    assert view.status == OrderStatus.COMPLETED and ("cancelled", "email") not in fake.messages


async def test_finding_2_a_hold_after_the_first_scan_is_refused(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.LABELED)
        await sleep_until_after_label(env, fake, 4.9)
        reason = await refusal(handle.execute_update(OrderWorkflow.hold, HoldRequest(reason="fraud check")))
        view = await handle.result()

    assert "already shipped" in reason
    assert OrderStatus.ON_HOLD not in [e.status for e in view.timeline]
    assert fake.committed == {"MUG-RED": 1}


async def test_finding_2_a_held_labelled_parcel_is_still_followed_and_its_stock_committed_when_it_moves(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.LABELED)
        await handle.execute_update(OrderWorkflow.hold, HoldRequest(reason="fraud check"))
        await sleep_until_after_label(env, fake, 6)  # the warehouse handed it over anyway
        held = await handle.query(OrderWorkflow.status)
        await handle.execute_update(OrderWorkflow.release)
        view = await handle.result()

    assert held.status == OrderStatus.ON_HOLD
    assert held.shipments[0].status == OrderStatus.IN_TRANSIT and fake.committed == {"MUG-RED": 1}
    assert view.status == OrderStatus.COMPLETED


# ---------------------------------------------------------------- 6: nothing accepted and silently ignored


async def test_finding_6_an_address_change_while_the_label_is_being_bought_is_refused(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        await fake.outage("buy_label", hours=1)
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await view_when(env, handle, lambda v: bool(v.provider_waits))
        moved = Address(name="Ada Lovelace", line1="2 Difference Road", city="London", postal_code="N1", country="GB")
        reason = await refusal(handle.execute_update(OrderWorkflow.update_address, moved))
        view = await handle.result()

    assert "being bought" in reason
    assert fake.label_addresses == {1: "1 Analytical Way"} and "address updated" not in notes(view)


async def test_finding_6_a_cancel_accepted_during_the_label_purchase_voids_it_and_shipped_is_never_sent(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        await fake.outage("buy_label", hours=1)
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await view_when(env, handle, lambda v: bool(v.provider_waits))
        update = await handle.start_update(
            OrderWorkflow.cancel, CancelRequest(reason="duplicate order"), wait_for_stage=WorkflowUpdateStage.ACCEPTED
        )
        await env.sleep(2 * HOUR)
        await update.result()
        view = await handle.result()

    assert view.status == OrderStatus.CANCELLED
    assert fake.voided_labels == [1] and fake.available == {"MUG-RED": 5}
    assert ("shipped", "email") not in fake.messages and ("shipped", "sms") not in fake.messages


# --------------------------------------------------------------------- 10: Temporal's own cancel compensates


async def test_finding_10_a_cancel_in_temporal_compensates_like_order_cancel(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 2}))
        picking = await base.wait_for_status(env, handle, OrderStatus.PICKING)
        await handle.cancel()  # the Web UI's button
        view = await handle.result()

    assert view.status == OrderStatus.CANCELLED and "cancel requested in Temporal" in notes(view)
    assert fake.available == {"MUG-RED": 5} and fake.cancelled_picks == [picking.pick_task_id]
    assert fake.messages.count(("cancelled", "email")) == 1


async def test_finding_10_a_cancel_in_temporal_after_shipping_is_refused_and_the_order_goes_on(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.IN_TRANSIT, step=HOUR)
        await handle.cancel()
        view = await handle.result()

    assert view.status == OrderStatus.COMPLETED
    assert "cancel requested in Temporal refused" in notes(view) and fake.voided_labels == []


# ---------------------------------------------------------------------- 12: every wait ends where ops see it


async def test_finding_12_an_address_nobody_corrects_fails_for_ops_then_is_given_up(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    fake.broken["buy_label"] = "CarrierAddressError"
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        with pytest.raises(WorkflowFailureError):
            # 7 days for the address, 3 for ops; an order that waits for ever would time out here
            await asyncio.wait_for(handle.result(), timeout=120)
        view = await handle.query(OrderWorkflow.status)

    assert view.status == OrderStatus.FAILED and "not corrected within 7 days" in notes(view)
    assert fake.available == {"MUG-RED": 5}  # the packed reservation is not held for ever


async def test_finding_12_one_parcels_unresolved_exception_does_not_undo_the_delivered_parcel(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 1, "TEE-M": 1})
    fake.split_lines = True
    fake.progressions[2] = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (0.5 * DAY, TrackingStatus.FAILURE)]
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 1, "TEE-M": 1}))
        view = await view_when(env, handle, lambda v: sum(p.status == OrderStatus.PICKING for p in v.shipments) == 2)
        for parcel in view.shipments:
            await handle.signal(OrderWorkflow.pick_confirmed, parcel.pick_task_id or "")
        done = await handle.result()  # nobody resolves parcel 2's exception

    assert done.status == OrderStatus.COMPLETED
    assert [(p.shipment_no, p.status) for p in done.shipments] == [
        (1, OrderStatus.DELIVERED),
        (2, OrderStatus.FAILED),
    ]
    assert fake.voided_labels == []  # neither label was voided: both parcels left the building
    assert fake.committed == {"MUG-RED": 1, "TEE-M": 1}


async def test_finding_12_a_cancelled_tracker_is_not_taken_for_a_shipment(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    fake.progression = [(0.1 * DAY, TrackingStatus.CANCELLED)]  # someone voided the label at the carrier
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.LABELED)
        await env.sleep(DAY)
        committed = dict(fake.committed)
        await handle.execute_update(OrderWorkflow.cancel, CancelRequest(reason="label voided"))
        view = await handle.result()

    assert committed == {}  # nothing left the building
    assert view.status == OrderStatus.CANCELLED and fake.available == {"MUG-RED": 5}


# ------------------------------------------------------------------------ 14: messages say what happened


async def test_finding_14_the_refund_notice_names_the_parcel_and_the_amount_paid_back(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 2})
    fake.progression = [(0.2 * DAY, TrackingStatus.IN_TRANSIT), (DAY, TrackingStatus.RETURN_TO_SENDER)]
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 2}))
        await base.confirm_pick(env, handle)
        await base.wait_for_status(env, handle, OrderStatus.DELIVERY_EXCEPTION, step=HOUR)
        await handle.execute_update(
            OrderWorkflow.resolve_delivery_exception, ResolveDeliveryRequest(action="refund", note="lost")
        )
        await handle.result()

    [context] = [c for event, c in fake.contexts if event == "refund_issued"]
    assert context["amount"] == "25.00 USD" and context["what"] == "MUG-RED x2"
    assert fake.parcel_refunds == [(1, 2500)]


async def test_finding_14_giving_up_the_rest_says_that_part_is_cancelled_not_that_nothing_shipped(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 2, "TEE-M": 0})
    policy = POLICY.model_copy(update={"partial_shipment": "ship_available"})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 2, "TEE-M": 1}), policy)
        view = await view_when(
            env, handle, lambda v: bool(v.shipments) and v.shipments[0].status == OrderStatus.PICKING
        )
        await handle.signal(OrderWorkflow.pick_confirmed, view.shipments[0].pick_task_id or "")
        await handle.result()  # TEE-M never comes: that part is given up after 14 days

    events = [event for event, _ in fake.contexts]
    assert "partly_cancelled" in events and "cancelled" not in events
    [context] = [c for event, c in fake.contexts if event == "partly_cancelled"]
    assert context["what"] == "TEE-M x1"


# --------------------------------------------------------------- 15: versioning, history, stuck attributes


async def test_finding_15_a_version_1_input_from_an_old_starter_takes_todays_path(env: WorkflowEnvironment) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        order = new_order()
        handle = await env.client.start_workflow(
            OrderWorkflow.run,
            base.OrderWorkflowInput(order=order, policy=POLICY, workflow_version=1),
            id=order.workflow_id,
            task_queue="test-orders",
        )
        await base.confirm_pick(env, handle)
        await handle.result()
        history = await handle.fetch_history()

    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert "buy_label" not in scheduled  # bought as a local activity, like every order placed today


async def test_finding_15_update_results_stay_small_however_many_updates_an_order_takes(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 5})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.wait_for_status(env, handle, OrderStatus.PICKING)
        for i in range(8):
            await handle.execute_update(OrderWorkflow.hold, HoldRequest(reason=f"check {i}"))
            await handle.execute_update(OrderWorkflow.release)
        history = await handle.fetch_history()

    sizes = [
        sum(len(p.data) for p in e.workflow_execution_update_completed_event_attributes.outcome.success.payloads)
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED
    ]
    assert len(sizes) == 16
    assert max(sizes) < 400 and max(sizes) - min(sizes) < 100  # not the timeline, which grows with each update


async def test_finding_15_pick_overdue_clears_when_a_count_releases_the_overdue_parcel(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 1})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order())
        await base.wait_for_status(env, handle, OrderStatus.PICKING)
        await env.sleep(5 * HOUR)
        overdue = (await handle.describe()).typed_search_attributes.get(PICK_OVERDUE)
        await handle.signal(OrderWorkflow.stock_released, "MUG-RED")  # a count took the units
        await base.wait_for_status(env, handle, OrderStatus.BACKORDERED)
        await env.sleep(60)
        after = (await handle.describe()).typed_search_attributes.get(PICK_OVERDUE)

    assert overdue is True and after is False


# ----------------------------------------------------------------------------------- new-user findings


async def test_new_user_1_and_2_a_count_release_says_the_order_waits_and_shows_the_parcel_cancelled(
    env: WorkflowEnvironment,
) -> None:
    fake = base.world(env, {"MUG-RED": 2})
    async with base.worker(env, fake):
        handle = await base.start(env.client, new_order({"MUG-RED": 2}))
        await base.wait_for_status(env, handle, OrderStatus.PICKING)
        fake.available["MUG-RED"] = 0  # the count found none of them
        await handle.signal(
            OrderWorkflow.reservation_released,
            ReservationReleased(sku="MUG-RED", warehouse="LDN-1", shipments=[1], reason="count"),
        )
        view = await base.wait_for_status(env, handle, OrderStatus.BACKORDERED)
        await env.sleep(60)

    events = [event for event, _ in fake.contexts]
    assert "partial_shipment" not in events and "backordered" in events  # nothing is on its way
    [context] = [c for event, c in fake.contexts if event == "backordered"]
    assert context["short"] == "MUG-RED x2"  # what waits
    assert view.shipments[0].status == OrderStatus.CANCELLED  # not PICKING for ever
    assert fake.cancelled_picks == []  # the count's own transaction cancelled its pick task
