"""The worker's slots: how many tasks of each kind it runs at once, and which workflow tasks get a slot first."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)

from common.config import Settings

_SDK_DEFAULT_SLOTS = 100


@dataclass(frozen=True)
class _Permit(SlotPermit):
    sticky: bool


class NewWorkflowsFirst(CustomSlotSupplier):
    """Workflow task slots of which the next tasks of workflows this worker already runs (its sticky queue) may
    hold at most `sticky`: the rest wait for new workflows' first tasks. In a rush of orders, a worker that let
    the later steps of the orders it holds take every slot would start no new order, and send no confirmation,
    until those were done (docs/performance.md, Flash sale)."""

    def __init__(self, slots: int, sticky: int) -> None:
        self._free = slots
        self._sticky_free = min(sticky, slots)
        # The SDK may release a slot from a thread of its own: the counts are locked, waiters woken on their loop.
        self._lock = threading.Lock()
        self._waiters: list[asyncio.Future[None]] = []

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while True:
            with self._lock:
                permit = self._take(ctx.is_sticky)
                if permit is not None:
                    return permit
                freed = asyncio.get_running_loop().create_future()
                self._waiters.append(freed)
            try:
                await freed
            finally:
                with self._lock:
                    if freed in self._waiters:
                        self._waiters.remove(freed)

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        with self._lock:
            return self._take(ctx.is_sticky)

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        pass

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        assert isinstance(ctx.permit, _Permit)
        with self._lock:
            self._free += 1
            self._sticky_free += ctx.permit.sticky
            waiters, self._waiters = self._waiters, []
        for freed in waiters:
            freed.get_loop().call_soon_threadsafe(_wake, freed)

    def _take(self, sticky: bool) -> _Permit | None:
        if self._free == 0 or (sticky and self._sticky_free == 0):
            return None
        self._free -= 1
        self._sticky_free -= sticky
        return _Permit(sticky=sticky)


def _wake(freed: asyncio.Future[None]) -> None:
    if not freed.done():
        freed.set_result(None)


def worker_tuner(settings: Settings) -> WorkerTuner:
    """The engine worker's slots, from FULFILL_WORKER_MAX_CONCURRENT_* and FULFILL_WORKER_STICKY_TASK_SLOTS."""
    workflow_slots = settings.worker_max_concurrent_workflow_tasks or _SDK_DEFAULT_SLOTS
    sticky = settings.worker_sticky_task_slots
    return WorkerTuner.create_composite(
        workflow_supplier=FixedSizeSlotSupplier(workflow_slots)
        if sticky is None
        else NewWorkflowsFirst(workflow_slots, sticky),
        activity_supplier=FixedSizeSlotSupplier(settings.worker_max_concurrent_activities or _SDK_DEFAULT_SLOTS),
        local_activity_supplier=FixedSizeSlotSupplier(
            settings.worker_max_concurrent_local_activities or _SDK_DEFAULT_SLOTS
        ),
        nexus_supplier=FixedSizeSlotSupplier(_SDK_DEFAULT_SLOTS),
    )
