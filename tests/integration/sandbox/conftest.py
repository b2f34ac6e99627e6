"""The sandbox tests' own sandbox (on free ports, a fresh database per test) and the engine's carrier client
pointed at it; a test module with other needs defines its own `sb`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.integrations.carrier import CarrierClient
from sandbox import SandboxServers
from tests.integration.sandbox.test_sandbox import start_sandbox


@pytest.fixture
async def sb(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    async with start_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
async def carrier(sb: SandboxServers) -> AsyncIterator[CarrierClient]:
    client = CarrierClient(sb.settings_for_clients())
    yield client
    await client.close()
