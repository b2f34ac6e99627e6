"""The sandbox tests' own sandbox (on free ports, a fresh database per test) and the engine's carrier client
pointed at it; a test module with other needs defines its own `sb`. For the 3PL: `threepl_sb` (the sandbox 3PL
at test speed, posting no webhooks) and `shipbob` (the engine's ShipBob adapter pointed at it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.integrations.carrier import CarrierClient
from common.integrations.shipbob import ShipBobClient
from sandbox import SandboxServers, free_port_settings
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


# ---------------------------------------------------------------------------------------------------------
# The sandbox 3PL and the engine's ShipBob adapter pointed at it

THREEPL_STEP = 0.3  # seconds from acceptance to shipping, and from shipping to delivery, in these tests


def threepl_sandbox(tmp_path: Path, **settings: Any) -> SandboxServers:
    base = free_port_settings(
        var_dir=tmp_path,
        sandbox_threepl_ship_after=THREEPL_STEP,
        sandbox_threepl_deliver_after=THREEPL_STEP,
        **settings,
    )
    return SandboxServers(base, db_path=tmp_path / "sb.db")


@pytest.fixture
async def threepl_sb(tmp_path: Path) -> AsyncIterator[SandboxServers]:
    async with threepl_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
async def shipbob(threepl_sb: SandboxServers) -> AsyncIterator[ShipBobClient]:
    client = ShipBobClient(threepl_sb.settings_for_clients())
    yield client
    await client.close()
