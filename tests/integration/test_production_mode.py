"""`python -m workers.worker` in production mode on the embedded stack's defaults exits 2 before it touches
anything, naming each problem; told it is the embedded stack, the same worker starts and polls."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.testing import WorkflowEnvironment

from common.config import Settings
from common.production import unsafe_settings
from tests.integration.worker_process import WorkerProcess


async def test_the_worker_refuses_production_on_defaults(dev_server: WorkflowEnvironment, tmp_path: Path) -> None:
    task_queue = f"prod-mode-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    # Defaults but for where Temporal is (so a worker that did start would show up as a poller there)
    env |= {
        "FULFILL_ENVIRONMENT": "production",
        "FULFILL_TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "FULFILL_TASK_QUEUE": task_queue,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "workers.worker"],
        cwd=tmp_path,  # the default database and var/ are relative: they would appear here
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    problems = unsafe_settings(Settings.model_validate({"environment": "production"}))
    assert len(problems) >= 10
    for problem in problems:
        assert problem in result.stderr
    assert "set FULFILL_ENVIRONMENT=embedded for the embedded stack" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing started: no database or var/ folder, no poller on its task queue
    assert os.listdir(tmp_path) == []
    described = await dev_server.client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=dev_server.client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    assert list(described.pollers) == []


async def test_the_embedded_worker_starts(
    dev_server: WorkflowEnvironment, stack_settings: Settings, tmp_path: Path
) -> None:
    settings = stack_settings.model_copy(
        update={"environment": "embedded", "task_queue": f"embedded-{uuid.uuid4().hex[:6]}"}
    )
    assert unsafe_settings(settings)  # the sandbox's settings: production mode would refuse them
    async with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        await worker.start(dev_server.client)
        await worker.terminate()
        assert "refusing to start" not in worker.log()
