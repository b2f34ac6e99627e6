"""Clients name the workflows' signals, updates and queries by typed reference; where a module under the
workflows must name one, its constant is tied to the workflow's handler here."""

from __future__ import annotations

import re
from pathlib import Path

from temporalio import workflow

from common.order_signals import STOCK_RECEIVED
from common.threepl.contracts import THREEPL_UPDATE
from workflows.order import OrderWorkflow

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = [path for area in ("api", "cli", "http") for path in sorted((ROOT / "src/common" / area).glob("*.py"))]
STRING_CALL = re.compile(r"\.(signal|query|execute_update|start_update|start_workflow)\(\s*[\"']")


def test_clients_use_no_string_names() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {text.strip()}"
        for path in CLIENTS
        for n, text in enumerate(path.read_text().splitlines(), start=1)
        if STRING_CALL.search(text)
    ]
    assert found == []


def test_the_stock_received_name_is_the_workflows_handler() -> None:
    definition = workflow._SignalDefinition.from_fn(OrderWorkflow.stock_received)
    assert definition is not None and definition.name == STOCK_RECEIVED


def test_the_3pl_news_name_is_the_workflows_handler() -> None:
    definition = workflow._SignalDefinition.from_fn(OrderWorkflow.threepl_update)
    assert definition is not None and definition.name == THREEPL_UPDATE
