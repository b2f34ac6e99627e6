"""An order's history is encrypted end to end, and the replayer reads it with the same converter."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from common.config import get_settings
from common.crypto.codec import PayloadUndecodable
from common.privacy import data_converter
from tests.orders import sample_order
from tests.workflows.orders.test_order_workflow import confirm_pick, start, worker, world
from workflows.order import OrderWorkflow


async def test_an_encrypted_history_replays_with_the_engines_converter_only(
    env: WorkflowEnvironment, tmp_path: Path
) -> None:
    order = sample_order(f"ORD-{uuid.uuid4().hex[:8]}")
    fake = world(env, {"MUG-RED": 5})
    async with worker(env, fake):
        handle = await start(env.client, order)
        await confirm_pick(env, handle)
        await handle.result()
    history = await handle.fetch_history()
    raw = history.to_json()
    for detail in (order.customer.name, order.customer.email, order.ship_to.line1):
        assert detail not in raw

    await Replayer(workflows=[OrderWorkflow], data_converter=data_converter(get_settings())).replay_workflow(history)

    # Another deployment's keys cannot read it
    strangers = get_settings().model_copy(update={"codec_keys": None, "codec_key_file": tmp_path / "other-keys.json"})
    with pytest.raises(Exception) as refused:
        await Replayer(workflows=[OrderWorkflow], data_converter=data_converter(strangers)).replay_workflow(history)
    assert isinstance(refused.value, PayloadUndecodable) or "codec key" in str(refused.value)
