"""`python -m workers.setup`, the deployment's one-shot set-up, as the compose service and the Kubernetes Job run
it: a real subprocess against a real Temporal dev server (started without the engine's search attributes, as a
fresh cluster is) and a fresh database. It waits for a server that starts after it, migrates, registers, and a
second run changes nothing; an unreachable server or a missing namespace is one line and exit code 1."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from common.db.engine import create_engine, head_revision
from common.db.tables import metadata
from common.temporal import SEARCH_ATTRIBUTES, dev_server_search_attribute_args
from tests.integration.db_fixtures import BACKENDS, database_url
from tests.integration.worker_process import REPO, DevServerProcess, free_port


class BareDevServer(DevServerProcess):
    """A dev server without the engine's search attributes: what the set-up must register."""

    def command(self) -> list[str]:
        command = super().command()
        registered = dev_server_search_attribute_args()
        assert command[-len(registered) :] == registered
        return command[: -len(registered)]


def setup_env(database: str, temporal_address: str) -> dict[str, str]:
    """Only what the set-up reads; none of the test session's other FULFILL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FULFILL_")}
    env.update(
        FULFILL_DATABASE_URL=database,
        FULFILL_TEMPORAL_ADDRESS=temporal_address,
        FULFILL_TEMPORAL_NAMESPACE="default",
    )
    return env


def start_setup(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers.setup", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def finished(proc: subprocess.Popen[str], within: float = 90) -> tuple[int, str, str]:
    out, err = await asyncio.to_thread(proc.communicate, timeout=within)
    return proc.returncode, out, err


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def custom_search_attributes(address: str) -> dict[str, int]:
    client = await Client.connect(address, namespace="default")
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
    return dict(listed.custom_attributes)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_setup_waits_for_temporal_then_migrates_and_registers_and_runs_again(
    backend: str, tmp_path: Path
) -> None:
    async with database_url(backend, tmp_path) as url:
        port = free_port()
        env = setup_env(url, f"127.0.0.1:{port}")
        # Started before the server, as in compose and Kubernetes: --wait keeps it trying
        first = start_setup(env, "--wait", "90")
        await asyncio.sleep(2)
        assert first.poll() is None, first.communicate()
        async with BareDevServer(tmp_path / "temporal.db", tmp_path / "temporal.log", port=port) as server:
            await server.start()
            code, out, err = await finished(first)
            assert code == 0, (out, err)
            assert "Traceback" not in err
            assert f"migrated to {head_revision()}" in out
            assert "added " in out

            tables = await table_names(url)
            assert set(metadata.tables) <= tables
            assert "alembic_version" in tables
            registered = await custom_search_attributes(server.address)
            for key in SEARCH_ATTRIBUTES:
                assert registered.get(key.name) == IndexedValueType.ValueType(key.indexed_value_type), key.name

            # Idempotent: a second run (a re-run Job, a compose restart) succeeds and changes nothing
            code, out, err = await finished(start_setup(env))
            assert code == 0, (out, err)
            assert "already registered" in out
            assert await custom_search_attributes(server.address) == registered
            assert await table_names(url) == tables

            # A namespace nobody created: one line that says so, exit 1
            code, out, err = await finished(start_setup({**env, "FULFILL_TEMPORAL_NAMESPACE": "no-such-namespace"}))
            assert code == 1, (out, err)
            assert "Traceback" not in err
            [line] = [line for line in err.splitlines() if "setup failed" in line]
            assert "namespace 'no-such-namespace'" in line and "create the namespace" in line, line


async def test_unreachable_temporal_is_exit_1_and_one_line(tmp_path: Path) -> None:
    env = setup_env(f"sqlite+aiosqlite:///{tmp_path / 'fulfill.db'}", f"127.0.0.1:{free_port()}")
    code, out, err = await finished(start_setup(env, "--wait", "3"))
    assert code == 1, (out, err)
    lines = [line for line in err.splitlines() if "setup failed" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("setup failed: cannot reach Temporal at 127.0.0.1:")
    assert "connection refused" in lines[0]

    # Without --wait: no retry at all, just the line
    code, out, err = await finished(start_setup(env))
    assert code == 1
    assert err.strip().splitlines() == [re.sub(r" \(tried \d+ times\)$", "", lines[0])]
