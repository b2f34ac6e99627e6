"""Safe evolution: every recorded order history (tests/replay/histories/*.json, `make record-histories`)
replays against today's OrderWorkflow. A change that would make running orders take a different path
than the one their history records fails here, before it reaches a worker.

The last tests show the check has teeth: the same histories fail against a copy of the workflow that
reorders two steps, and pass once that change sits behind `workflow.patched` (tests/replay/changed_workflows.py).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from common.config import get_settings
from common.privacy import data_converter
from tests.replay.changed_workflows import ReservesBeforeConfirming, ReservesBeforeConfirmingPatched
from workflows import order, returns, steps
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow
from workflows.sms_fallback import SmsFallbackWorkflow

# pydantic imports email_validator's submodules (and idna) lazily, on the first EmailStr it validates: when
# that first one is inside the workflow sandbox (this module run alone), the SDK warns that a passed-through
# module was imported late. Harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:Module .* was imported after initial workflow load:UserWarning")

HISTORIES = Path(__file__).resolve().parent / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
# Return workflows (one per RMA) recorded beside the order path that ran them
RETURN_FILES = sorted((HISTORIES / "returns").glob("*.json"))
SMS_FALLBACK_FILES = sorted((HISTORIES / "sms_fallback").glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


async def replay(history: WorkflowHistory, *workflows: type) -> None:
    await Replayer(workflows=list(workflows), data_converter=data_converter(get_settings())).replay_workflow(history)


def test_histories_are_recorded() -> None:
    assert {p.stem for p in FILES} >= {"happy_path", "backorder_then_restock"}, (
        "run `make record-histories` for new paths"
    )
    for path in FILES:
        events = json.loads(path.read_text())["events"]
        assert events[0]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED"
        assert events[0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"] == "OrderWorkflow"
        assert events[-1]["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED", f"{path.name} is unfinished"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_recorded_history_replays_against_todays_workflow(path: Path) -> None:
    await replay(load(path), OrderWorkflow)


@pytest.mark.parametrize("path", RETURN_FILES, ids=[p.stem for p in RETURN_FILES])
async def test_recorded_return_history_replays_against_todays_return_workflow(path: Path) -> None:
    await replay(load(path), ReturnWorkflow)


@pytest.mark.parametrize("path", SMS_FALLBACK_FILES, ids=[p.stem for p in SMS_FALLBACK_FILES])
async def test_recorded_sms_fallback_history_replays_against_todays_fallback_workflow(path: Path) -> None:
    await replay(load(path), SmsFallbackWorkflow)


def test_the_sms_fallback_has_a_recorded_history() -> None:
    assert SMS_FALLBACK_FILES, "record one: python -m tests.replay.record sms_undelivered_falls_back"


# Each failure-handling patch (workflows/steps.py, order/patches.py, returns.py) has a recorded history.
PATCHED_PATHS = {
    "wait-out-outages": "carrier_outage_waited_out",
    "messages-never-fail": "messages_waited_out",
    "park-failures": "failed_then_retried",
    "labelled-parcels-ask-the-carrier": "cancel_refused_by_the_carrier",
    "undo-per-parcel": "cancelled_after_label",
    "refund-through-gateway": "refunded_through_the_gateway",
    "temporal-cancel-compensates": "cancelled_in_temporal",
    "lean-history-for-every-order": "placed_by_an_old_starter",
    "replacement-ships-on-return": "returns/exchange_ships_on_return",
    "return-failures-alert-ops": "returns/return_failed_for_ops",
    "confirmation-first": "confirmed_on_the_customer_queue",
}


def patches_in(path: Path) -> set[str]:
    found = set()
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes", {})
        if marker.get("markerName") == "core_patch":
            payload = marker["details"]["patch-data"]["payloads"][0]["data"]
            found.add(json.loads(base64.b64decode(payload))["id"])
    return found


def test_the_list_names_every_patch_in_the_code() -> None:
    in_code = {
        steps.WAIT_OUT_OUTAGES,
        steps.MESSAGES_NEVER_FAIL,
        order.PARK_FAILURES,
        order.LABELLED_PARCELS_ASK_THE_CARRIER,
        order.UNDO_PER_PARCEL,
        order.REFUND_THROUGH_GATEWAY,
        order.TEMPORAL_CANCEL_COMPENSATES,
        order.LEAN_FOR_EVERY_ORDER,
        order.CONFIRMATION_FIRST,
        returns.REPLACEMENT_SHIPS_ON_RETURN,
        returns.RETURN_FAILURES_ALERT_OPS,
    }
    assert set(PATCHED_PATHS) == in_code


@pytest.mark.parametrize(("patch", "path"), sorted(PATCHED_PATHS.items()))
def test_every_patch_has_a_recorded_history_that_takes_it(patch: str, path: str) -> None:
    assert patch in patches_in(HISTORIES / f"{path}.json"), f"record a history of {patch}: make record-histories"


# ------------------------------------------------------------------------------------- the check has teeth


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_an_unpatched_change_fails_the_replay(path: Path) -> None:
    with pytest.raises(workflow.NondeterminismError):
        await replay(load(path), ReservesBeforeConfirming)


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
async def test_the_same_change_behind_workflow_patched_replays(path: Path) -> None:
    await replay(load(path), ReservesBeforeConfirmingPatched)
