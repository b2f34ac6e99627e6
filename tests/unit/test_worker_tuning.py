"""The workflow task slots keep room for new orders' first tasks (workers.tuning.NewWorkflowsFirst); the sandbox
imports the workflows' helpers once (workers.worker.workflow_runner)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from temporalio.worker import SlotPermit, SlotReleaseContext

from common.config import Settings
from workers.tuning import NewWorkflowsFirst, worker_tuner
from workers.worker import workflow_helper_modules, workflow_runner


@dataclass
class Reserve:
    is_sticky: bool
    slot_type: str = "workflow"
    task_queue: str = "fulfillment"
    worker_identity: str = "test"
    worker_build_id: str = ""
    worker_deployment_version: None = None


def release(slots: NewWorkflowsFirst, permit: SlotPermit) -> None:
    slots.release_slot(SlotReleaseContext(slot_info=None, permit=permit))


async def test_sticky_tasks_take_at_most_their_share_and_new_workflows_the_rest() -> None:
    slots = NewWorkflowsFirst(slots=4, sticky=2)
    sticky = [await slots.reserve_slot(Reserve(is_sticky=True)) for _ in range(2)]  # type: ignore[arg-type]
    third_sticky = asyncio.create_task(slots.reserve_slot(Reserve(is_sticky=True)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not third_sticky.done(), "a third sticky task got a slot past its share"
    new = [await slots.reserve_slot(Reserve(is_sticky=False)) for _ in range(2)]  # type: ignore[arg-type]
    assert slots.try_reserve_slot(Reserve(is_sticky=False)) is None  # type: ignore[arg-type]

    release(slots, new[0])  # a free slot, but the sticky share is still full
    await asyncio.sleep(0.05)
    assert not third_sticky.done()
    release(slots, sticky[0])
    await asyncio.wait_for(third_sticky, 1)
    assert slots.try_reserve_slot(Reserve(is_sticky=True)) is None  # type: ignore[arg-type]
    assert slots.try_reserve_slot(Reserve(is_sticky=False)) is not None  # type: ignore[arg-type]
    assert slots.try_reserve_slot(Reserve(is_sticky=False)) is None  # type: ignore[arg-type]


async def test_a_cancelled_reservation_holds_no_slot() -> None:
    slots = NewWorkflowsFirst(slots=1, sticky=1)
    held = await slots.reserve_slot(Reserve(is_sticky=False))  # type: ignore[arg-type]
    waiting = asyncio.create_task(slots.reserve_slot(Reserve(is_sticky=True)))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release(slots, held)
    assert slots.try_reserve_slot(Reserve(is_sticky=True)) is not None  # type: ignore[arg-type]


def test_the_tuner_follows_the_settings() -> None:
    capped = worker_tuner(Settings(worker_max_concurrent_workflow_tasks=20, worker_sticky_task_slots=10))
    assert isinstance(capped._get_workflow_task_slot_supplier(), NewWorkflowsFirst)
    uncapped = worker_tuner(Settings(worker_sticky_task_slots=None))
    assert not isinstance(uncapped._get_workflow_task_slot_supplier(), NewWorkflowsFirst)


def test_the_sandbox_passes_the_workflow_helpers_through_and_keeps_the_workflows_in() -> None:
    """Every workflow it instantiates would import the helpers afresh (a third of the event loop in a rush of
    new orders); the modules that define workflows, and their packages, stay inside the sandbox."""
    passed = workflow_runner().restrictions.passthrough_modules
    assert {"workflows.steps", "workflows.order.fulfilment", "workflows.order.parcel"} <= passed
    assert not {"workflows", "workflows.order", "workflows.order.workflow", "workflows.returns"} & passed
    assert set(workflow_helper_modules()) <= passed
