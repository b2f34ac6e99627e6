"""The time-skipping server, one per test (it keeps one virtual clock), with the engine's search attributes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from common.temporal import DATA_CONVERTER, register_search_attributes
from tests.conftest import TEMPORAL_TEST_SERVER


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=DATA_CONVERTER, test_server_existing_path=str(TEMPORAL_TEST_SERVER)
    ) as env:
        await register_search_attributes(env.client)
        yield env
