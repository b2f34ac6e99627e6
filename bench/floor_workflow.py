"""The floor of the benchmark: the cheapest workflow shaped like an order (a chain of activities).

Kept apart from its activities (floor_worker.py) because the workflow sandbox re-imports this module for
every run. Activities are called by name, so nothing but temporalio is imported here.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

FLOOR_ACTIVITY = "floor_step"
DEFAULT_STEPS = 6


@workflow.defn(name="FloorWorkflow")
class FloorWorkflow:
    @workflow.run
    async def run(self, steps: int) -> int:
        """`steps` trivial activities one after another, like an order's happy path without its work."""
        for step in range(steps):
            await workflow.execute_activity(FLOOR_ACTIVITY, step, start_to_close_timeout=timedelta(seconds=30))
        return steps
