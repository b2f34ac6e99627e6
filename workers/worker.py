"""The fulfillment worker: runs OrderWorkflow, ReturnWorkflow, SmsFallbackWorkflow, ThreePLInventorySyncWorkflow
and every activity on task queue `fulfillment`, and keeps the 3PL inventory-sync schedules (workers.schedules).

Run with `python -m workers.worker` (settings from FULFILL_* environment variables). Scale by running
more of these processes: Python runs workflow code on one thread.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import logging
import pkgutil
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.worker import Worker, WorkerDeploymentConfig
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import workflows
from activities.inventory import InventoryActivities
from activities.notifications import NotificationActivities
from activities.returns import ReturnActivities
from activities.shipping import ShippingActivities
from activities.threepl import ThreePLActivities
from activities.threepl_inventory import ThreePLInventoryActivities
from activities.warehouse import WarehouseActivities
from common.config import Settings, get_settings
from common.integrations.carrier import CarrierClient
from common.integrations.email import EmailSender
from common.integrations.payments import payments_gateway
from common.integrations.sms import SmsSender
from common.integrations.threepl_providers import threepl_providers
from common.logs import configure_logging
from common.metrics import worker_runtime
from common.privacy import connect
from common.production import refuse_unsafe_start
from common.store import Store
from common.temporal import customer_task_queue, task_pollers
from common.tracing import configure as configure_tracing
from workers.reconciler import (
    running_fallback_relay,
    running_relay,
    running_sweeper,
    running_threepl_reconciler,
)
from workers.schedules import schedules_in_place
from workers.tuning import worker_tuner
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow
from workflows.sms_fallback import SmsFallbackWorkflow
from workflows.threepl_inventory import ThreePLInventorySyncWorkflow

log = logging.getLogger("fulfill.worker")


@asynccontextmanager
async def running_worker(client: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """A started worker with its outside-world clients and the order-signal relay; stops gracefully on exit."""
    carrier = CarrierClient(settings)
    try:
        email = EmailSender(settings)
        inventory = InventoryActivities(store, email, settings)
        warehouse = WarehouseActivities(store)
        shipping = ShippingActivities(
            store,
            carrier,
            rate_strategy=settings.rate_strategy,
            preferred_carriers=[c for c in settings.preferred_carriers.split(",") if c.strip()],
        )
        sms = SmsSender(settings)
        notifications = NotificationActivities(store, email, sms, settings)
        payments = payments_gateway(settings)
        returns = ReturnActivities(store, carrier, payments)
        threepls = threepl_providers(settings)
        threepl = ThreePLActivities(store, threepls, carrier)
        engine = engine_workers(
            client,
            settings.task_queue,
            workflows=[OrderWorkflow, ReturnWorkflow, SmsFallbackWorkflow, ThreePLInventorySyncWorkflow],
            activities=[
                *inventory.activities(),
                *warehouse.activities(),
                *shipping.activities(),
                *notifications.activities(),
                *returns.activities(),
                *threepl.activities(),
                *ThreePLInventoryActivities(store, threepls, settings).activities(),
            ],
            max_cached_workflows=settings.worker_max_cached_workflows,
            tuner=worker_tuner(settings),
            workflow_task_poller_behavior=task_pollers(settings),
            activity_task_poller_behavior=task_pollers(settings),
            graceful_shutdown_timeout=timedelta(seconds=settings.worker_graceful_shutdown),
            deployment_config=deployment_version(settings),
        )
        try:
            async with engine as worker, running_background_tasks(client, store, carrier, settings):
                yield worker
        finally:
            await payments.close()
            for provider in threepls.values():
                await provider.close()
            await sms.close()
            await email.close()
    finally:
        await carrier.close()


def deployment_version(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's Worker Deployment version, if versioning is on (docs/rollouts.md). Every workflow is
    auto-upgrade: an order runs for weeks (its return window), so pinning it to the build that started it would
    keep every old build running for as long; instead its next task goes to the current version, which must
    replay it, and changes to running orders go behind `workflow.patched` as before."""
    if settings.worker_deployment_name is None or settings.worker_build_id is None:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(
            deployment_name=settings.worker_deployment_name, build_id=settings.worker_build_id
        ),
        use_worker_versioning=True,
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


def workflow_helper_modules() -> list[str]:
    """The modules under workflows/ that define no workflow (and no package, whose __init__ imports one)."""
    helpers = []
    for info in pkgutil.walk_packages(workflows.__path__, "workflows."):
        if info.ispkg:
            continue
        module = importlib.import_module(info.name)
        if not any(hasattr(value, "__temporal_workflow_definition") for value in vars(module).values()):
            helpers.append(info.name)
    return helpers


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox, with the workflows' helper modules passed through. Else it imports them afresh for every
    workflow it instantiates: a third of a worker's event loop in a rush of new orders, ahead of their
    confirmations (docs/performance.md, Flash sale). They hold nothing per workflow at module level, only
    constants; the workflow modules themselves stay sandboxed, and the replay tests run everything inside the
    full sandbox (the Replayer's default runner)."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*workflow_helper_modules())
    return SandboxedWorkflowRunner(restrictions=restrictions)


# What the customer task queue's worker takes of the engine worker's options: it runs activities only.
_CUSTOMER_WORKER_OPTIONS = (
    "activity_task_poller_behavior",
    "graceful_shutdown_timeout",
    "deployment_config",
    "build_id",
)


def unversioned_build_id() -> str:
    """The build id a worker reports when it is not versioned (the Web UI's pollers list). Without one the SDK
    hashes the bytecode of every loaded module, about 1,400 here, compiling each from source where no bytecode
    is cached (a fresh var_dir's pycache, see cache_bytecode): 4 s of CPU at every start of a container."""
    return f"fulfillment-engine-{importlib.metadata.version('fulfillment-engine')}"


@asynccontextmanager
async def engine_workers(
    client: Client,
    task_queue: str,
    *,
    workflows: Sequence[type],
    activities: Sequence[Callable[..., Any]],
    **options: Any,
) -> AsyncIterator[Worker]:
    """The worker of `task_queue`, and beside it the worker of its customer task queue
    (common.temporal.customer_task_queue) with the same activities: only the confirmation is sent there, so in a
    rush of orders it waits behind other confirmations only. Yields the first."""
    options.setdefault("workflow_runner", workflow_runner())
    if options.get("deployment_config") is None:
        options.setdefault("build_id", unversioned_build_id())
    worker = Worker(client, task_queue=task_queue, workflows=workflows, activities=activities, **options)
    customer = Worker(
        client,
        task_queue=customer_task_queue(task_queue),
        activities=activities,
        **{name: value for name, value in options.items() if name in _CUSTOMER_WORKER_OPTIONS},
    )
    async with worker, customer:
        yield worker


@asynccontextmanager
async def running_background_tasks(
    client: Client, store: Store, carrier: CarrierClient, settings: Settings
) -> AsyncIterator[None]:
    """What every worker process runs beside the worker, stopped before it: the relay delivers what the
    order-signal outbox still holds, the fallback relay starts the email fallbacks of undelivered SMS the HTTP API
    could not, the sweeper gives back what orders closed without compensating still hold, the 3PL reconciler
    pulls what lost 3PL webhooks did not bring; schedules_in_place: see there."""
    async with (
        schedules_in_place(client, store, settings),
        running_relay(client, store, settings),
        running_fallback_relay(client, store, settings),
        running_sweeper(client, store, carrier, settings),
        running_threepl_reconciler(client, store, settings),
    ):
        yield


async def serve(settings: Settings) -> None:
    store = await Store.open(settings.database_url)
    # The runtime (the metrics endpoint) first: a client is bound to its runtime for good.
    client = await connect(settings, runtime=worker_runtime(settings))
    if settings.worker_metrics_port:
        log.info("worker metrics at http://%s:%d/metrics", settings.worker_metrics_host, settings.worker_metrics_port)
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


def cache_bytecode(settings: Settings) -> None:
    """Let Python keep compiled bytecode, under `<var_dir>/pycache`, when the environment turned it off
    (PYTHONDONTWRITEBYTECODE, usual in dev shells and container images). The workflow sandbox executes
    the workflow modules afresh for every workflow it creates (a new order, or one evicted from the sticky
    cache); without bytecode that means compiling the module's source each time (docs/performance.md)."""
    if sys.dont_write_bytecode:
        sys.pycache_prefix = str((settings.var_dir / "pycache").resolve())
        sys.dont_write_bytecode = False


def main() -> None:
    configure_logging()
    settings = get_settings()
    refuse_unsafe_start(settings, "worker")  # before anything connects or opens the database
    cache_bytecode(settings)
    configure_tracing(settings, settings.otel_service_name_worker)  # its client's interceptor traces the worker
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
