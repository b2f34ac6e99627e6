"""The CLI as a user meets it: it says so when the engine does not answer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from common.config import Settings
from common.db import Store
from tests.integration.conftest import FULFILL, settings_env
from tests.orders import order_dict


def shell(settings: Settings | None = None, **variables: str) -> dict[str, str]:
    """A shell's environment: `settings` as FULFILL_* variables (none at all without), and `variables` on top;
    a variable given as "" is not set."""
    env = (
        settings_env(settings)
        if settings is not None
        else {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    )
    env.update(variables)
    return {k: v for k, v in env.items() if v != ""}


def fulfill(env: dict[str, str], *args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FULFILL), *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


async def test_an_engine_that_does_not_answer_is_one_line_and_exit_1(
    dev_server: WorkflowEnvironment, stack_settings: Settings, store: Store, tmp_path: Path
) -> None:
    """An order on a task queue no worker polls (the catalogue in `store`): its status query times out on the
    server."""
    unattended = stack_settings.model_copy(update={"task_queue": "nobody-polls-this"})
    env = shell(unattended)
    order = json.dumps(order_dict("ORD-NOWORKER-1", {"MUG-RED": 1}))
    done = await asyncio.to_thread(fulfill, env, "order", "place", "-", cwd=tmp_path, stdin=order)
    assert done.returncode == 0, done.stderr
    try:
        done = await asyncio.to_thread(fulfill, env, "order", "status", "ORD-NOWORKER-1", cwd=tmp_path)
        assert done.returncode == 1
        assert done.stderr.startswith("error: the engine did not answer (is a worker running? `make run`): ")
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        await dev_server.client.get_workflow_handle("order-ORD-NOWORKER-1").terminate("test over")
