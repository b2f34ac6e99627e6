"""Worker process for the benchmark floor: FloorWorkflow and its trivial activity on one task queue.

Run by bench/orders.py as its own process (like the engine's worker), until SIGTERM:
    python bench/floor_worker.py --address 127.0.0.1:7233 --task-queue bench-floor
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from temporalio import activity
from temporalio.client import Client
from temporalio.worker import Worker

from common.config import Settings
from common.privacy import data_converter
from common.temporal import task_pollers

from floor_workflow import FLOOR_ACTIVITY, FloorWorkflow


@activity.defn(name=FLOOR_ACTIVITY)
async def floor_step(step: int) -> int:
    return step


async def serve(address: str, namespace: str, task_queue: str) -> None:
    # Same data converter (encryption included: the bench's client starts these) and worker tuning (slots,
    # pollers) as the engine's worker: the floor differs only in the work.
    client = await Client.connect(address, namespace=namespace, data_converter=data_converter(Settings()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings = Settings()  # the FULFILL_* worker tuning the engine's worker gets from bench/orders.py
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[FloorWorkflow],
        activities=[floor_step],
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        workflow_task_poller_behavior=task_pollers(settings),
        activity_task_poller_behavior=task_pollers(settings),
    ):
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--task-queue", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.address, args.namespace, args.task_queue))


if __name__ == "__main__":
    main()
