"""Deliberately changed copies of OrderWorkflow for tests/replay/test_replay.py: the same edit made the
wrong way (no patch) and the right way (behind `workflow.patched`).

In a module of their own, without I/O at import: the workflow sandbox re-imports a workflow's module.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from common.models import OrderView, OrderWorkflowInput
    from workflows.order import OrderWorkflow


@workflow.defn(name="OrderWorkflow")
class ReservesBeforeConfirming(OrderWorkflow):
    """A plausible edit made the wrong way: reserve stock before telling the customer, without a patch.
    Orders already past their confirmation would take a different path on replay."""

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderView:
        await _reserve_first(input)
        return await super().run(input)


@workflow.defn(name="OrderWorkflow")
class ReservesBeforeConfirmingPatched(OrderWorkflow):
    """The same edit the right way: new orders take the new path, recorded ones keep theirs."""

    @workflow.run
    async def run(self, input: OrderWorkflowInput) -> OrderView:
        if workflow.patched("reserve-before-confirming"):
            await _reserve_first(input)
        return await super().run(input)


async def _reserve_first(input: OrderWorkflowInput) -> None:
    # By activity name, so this stays a valid example whatever the workflow's helpers are called.
    await workflow.execute_activity(
        "reserve_stock",
        {"order_id": input.order.order_id, "lines": [line.model_dump() for line in input.order.lines]},
        start_to_close_timeout=timedelta(seconds=30),
    )
