"""Worker Deployments (docs/rollouts.md): a worker with FULFILL_WORKER_DEPLOYMENT_NAME and FULFILL_WORKER_BUILD_ID
polls as that version; an order started on it is auto-upgrade, so once a new build is made current the order's
next step runs on the new build, and it completes there."""

from __future__ import annotations

import asyncio
import importlib.metadata
import uuid

import pytest
import temporalio.worker._worker
from temporalio.api.enums.v1 import TaskQueueType, VersioningBehavior
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from common.api import FulfillmentApi
from common.config import Settings
from common.models import OrderStatus, workflow_id_for
from common.store import Store
from tests.orders import order_dict
from workers.worker import running_worker, unversioned_build_id


async def make_current(client: Client, deployment: str, build_id: str) -> None:
    """As `temporal worker deployment set-current-version` does; the version exists once its worker polls."""
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=deployment, build_id=build_id
    )
    for _ in range(100):
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            return
        except RPCError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"{deployment}.{build_id} never became current")


async def versioning(client: Client, workflow_id: str) -> tuple[int, str]:
    info = (await client.get_workflow_handle(workflow_id).describe()).raw_description.workflow_execution_info
    return info.versioning_info.behavior, info.versioning_info.deployment_version.build_id


async def wait_for(api: FulfillmentApi, order_id: str, status: OrderStatus) -> None:
    for _ in range(200):
        if (await api.order_status(order_id)).status == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{order_id} never reached {status}")


async def test_a_running_order_moves_to_the_new_build_once_it_is_current(
    dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store
) -> None:
    client = dev_server.client
    deployment = f"fulfillment-{uuid.uuid4().hex[:6]}"
    old, new = (
        stack_settings.model_copy(
            update={
                "task_queue": f"versioned-{deployment}",
                "worker_deployment_name": deployment,
                "worker_build_id": build_id,
            }
        )
        for build_id in ("build-1", "build-2")
    )
    api = FulfillmentApi(client, store, old)
    order_id = f"ORD-{uuid.uuid4().hex[:8]}"
    workflow_id = workflow_id_for(order_id)

    async with running_worker(client, old, store):
        await make_current(client, deployment, "build-1")
        await api.place_order(order_dict(order_id, {"MUG-RED": 1}))
        await wait_for(api, order_id, OrderStatus.PICKING)
        assert await versioning(client, workflow_id) == (VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE, "build-1")

        async with running_worker(client, new, store):
            await make_current(client, deployment, "build-2")
            picks = [p for p in await api.open_picks() if p.order_id == order_id]
            await api.confirm_pick(picks[0].id)
            await wait_for(api, order_id, OrderStatus.COMPLETED)

    assert await versioning(client, workflow_id) == (VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE, "build-2")


async def test_an_unversioned_worker_names_its_build_without_hashing_every_module(
    dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's default build id compiles and hashes every loaded module (4 s of CPU at each start in a fresh
    container); the engine names its build instead, and that is what the task queue's pollers show."""

    def refuse() -> str:
        raise AssertionError("the worker hashed every loaded module for its build id")

    monkeypatch.setattr(temporalio.worker._worker, "load_default_build_id", refuse)
    settings = stack_settings.model_copy(update={"task_queue": f"unversioned-{uuid.uuid4().hex[:6]}"})
    client = dev_server.client
    async with running_worker(client, settings, store):
        request = DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=settings.task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        for _ in range(100):
            pollers = (await client.workflow_service.describe_task_queue(request)).pollers
            if pollers:
                break
            await asyncio.sleep(0.1)
    assert {p.worker_version_capabilities.build_id for p in pollers} == {unversioned_build_id()}
    assert unversioned_build_id() == f"fulfillment-engine-{importlib.metadata.version('fulfillment-engine')}"
