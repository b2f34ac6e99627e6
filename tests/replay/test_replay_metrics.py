"""Replaying an order records no business metric: the workflow meter drops what a replay records, so a worker
that evicts an order from its cache, or a new worker taking it over, counts none of its past again. The runtime's
metrics go to a buffer, read after the replay; a probe counter shows the buffer records."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.runtime import MetricBuffer, Runtime, TelemetryConfig
from temporalio.worker import Replayer

from common.config import get_settings
from common.privacy import data_converter
from workflows.order import OrderWorkflow

HISTORIES = Path(__file__).resolve().parent / "histories"
PATHS = [
    "happy_path",
    "backorder_then_restock",
    "cancelled_after_label",
    "failed_then_retried",
    "returned_and_refunded",
]

pytestmark = pytest.mark.filterwarnings("ignore:Module .* was imported after initial workflow load:UserWarning")


@pytest.mark.parametrize("name", PATHS)
async def test_a_replayed_order_records_no_business_metric(name: str) -> None:
    buffer = MetricBuffer(10_000)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer))
    history = WorkflowHistory.from_json(f"replay-{name}", (HISTORIES / f"{name}.json").read_text())
    replayer = Replayer(workflows=[OrderWorkflow], data_converter=data_converter(get_settings()), runtime=runtime)
    await replayer.replay_workflow(history)
    runtime.metric_meter.create_counter("probe").add(1)
    recorded = {update.metric.name for update in buffer.retrieve_updates()}
    assert "probe" in recorded
    assert not {n for n in recorded if n.startswith("fulfill_")}, recorded
