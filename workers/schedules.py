"""The Temporal schedules the worker keeps: one inventory sync per 3PL provider that runs a warehouse of ours
(`threepl-inventory-sync-<provider>`, every `threepl_inventory_sync_interval` seconds, a run still going
skips the next: overlap SKIP). Created at worker start if missing, brought up to date (interval, workflow,
task queue) if present; paused stays paused. Visible in the Temporal Web UI under Schedules."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from common.config import Settings
from common.logs import describe_error
from common.store import Store
from workflows.threepl_inventory import ThreePLInventorySyncWorkflow, sync_workflow_id

log = logging.getLogger("fulfill.worker")


def inventory_sync_schedule(provider: str, settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ThreePLInventorySyncWorkflow.run,
            provider,
            id=sync_workflow_id(provider),  # each run's id is this plus the time it was due
            task_queue=settings.task_queue,
            static_summary=f"Inventory sync of 3PL {provider}",
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.threepl_inventory_sync_interval))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_inventory_sync_schedule(client: Client, provider: str, settings: Settings) -> str:
    """Create the provider's schedule, or update the one there; its id."""
    schedule_id = sync_workflow_id(provider)
    wanted = inventory_sync_schedule(provider, settings)
    try:
        await client.create_schedule(schedule_id, wanted)
        return schedule_id
    except ScheduleAlreadyRunningError:
        pass

    def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
        wanted.state = current.description.schedule.state  # keep paused (and its note) as ops left it
        return ScheduleUpdate(schedule=wanted)

    await client.get_schedule_handle(schedule_id).update(update)
    return schedule_id


async def ensure_schedules(client: Client, store: Store, settings: Settings) -> list[str]:
    """The inventory-sync schedule of every provider that runs a warehouse; the ids in place. A failure
    (Temporal or the database unreachable) is logged, not raised: the worker runs on without it, and the next
    start tries again."""
    done: list[str] = []
    try:
        providers = sorted(set((await store.catalog.warehouse_providers()).values()))
    except Exception as err:
        log.warning("3PL inventory-sync schedules not checked: %s", describe_error(err, limit=300))
        return done
    for provider in providers:
        try:
            done.append(await ensure_inventory_sync_schedule(client, provider, settings))
        except Exception as err:
            log.warning("3PL inventory-sync schedule of %s not in place: %s", provider, describe_error(err, limit=300))
    return done


@asynccontextmanager
async def schedules_in_place(client: Client, store: Store, settings: Settings) -> AsyncIterator[list[str]]:
    """ensure_schedules on entering (after the worker started); nothing to undo on leaving: schedules outlive
    the worker."""
    yield await ensure_schedules(client, store, settings)
