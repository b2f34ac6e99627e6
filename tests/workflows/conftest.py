"""The time-skipping server, one per test (it keeps one virtual clock), with the engine's search attributes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from common.config import get_settings
from common.privacy import data_converter
from common.temporal import register_search_attributes
from tests.conftest import TEMPORAL_TEST_SERVER


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(get_settings()), test_server_existing_path=str(TEMPORAL_TEST_SERVER)
    ) as env:
        await register_search_attributes(env.client)
        yield env
