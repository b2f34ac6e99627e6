"""The fulfillment worker: runs OrderWorkflow and every activity on task queue `fulfillment`.

Run with `python -m workers.worker` (settings from FULFILL_* environment variables). Scale by running
more of these processes: Python runs workflow code on one thread.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker

from activities.inventory import InventoryActivities
from activities.notifications import NotificationActivities
from activities.shipping import ShippingActivities
from activities.warehouse import WarehouseActivities
from common.config import Settings, get_settings
from common.db import Store
from common.integrations.carrier import CarrierClient
from common.integrations.email import EmailSender
from common.integrations.sms import SmsSender
from common.logs import configure_logging
from common.temporal import connect
from workflows.order import OrderWorkflow

log = logging.getLogger("fulfill.worker")


@asynccontextmanager
async def running_worker(client: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """A started worker with its outside-world clients; stops gracefully on exit."""
    carrier = CarrierClient(settings)
    try:
        email = EmailSender(settings)
        inventory = InventoryActivities(store, email, settings)
        warehouse = WarehouseActivities(store)
        shipping = ShippingActivities(store, carrier)
        notifications = NotificationActivities(store, email, SmsSender(settings), settings)
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[OrderWorkflow],
            activities=[
                inventory.reserve_stock,
                inventory.release_stock,
                inventory.commit_stock,
                inventory.alert_low_stock,
                warehouse.create_pick_task,
                warehouse.cancel_pick_tasks,
                shipping.buy_label,
                shipping.void_label,
                shipping.await_tracking_change,
                notifications.notify_customer,
                notifications.alert_ops,
            ],
            max_cached_workflows=settings.worker_max_cached_workflows,
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown),
        )
        async with worker:
            yield worker
    finally:
        await carrier.close()


async def serve(settings: Settings) -> None:
    store = await Store.open(settings.database_url)
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_worker(client, settings, store):
            log.info("worker polling task queue %r at %s", settings.task_queue, settings.temporal_address)
            await stop.wait()
            log.info("worker stopping (finishing in-flight activities)")
    finally:
        await store.close()


def main() -> None:
    configure_logging()
    asyncio.run(serve(get_settings()))


if __name__ == "__main__":
    main()
