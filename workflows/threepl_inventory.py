"""One sync of a 3PL's stock levels with our books (activities.threepl_inventory), then, if the differences
are above the threshold, one discrepancy email to ops. Started by the provider's Temporal schedule
(`threepl-inventory-sync-<provider>`, see workers.schedules), by the 3PL's inventory webhook
(`threepl-inventory-sync-<provider>-<minute>`: a burst of webhooks is one sync) and by
`fulfill 3pl sync-inventory`.

Deterministic code only: the activities pull, count and send. The alert's occurrence is this run's id, so a
retried alert activity sends nothing twice.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notifications import NotificationActivities
    from activities.threepl_inventory import ThreePLInventoryActivities
    from common.threepl.inventory_sync import InventorySyncSummary, discrepancy_alert

THREEPL_INVENTORY_WORKFLOW_TYPE = "ThreePLInventorySyncWorkflow"

# A 3PL outage is waited out (every 10 s at first, then at most every 5 minutes) for an hour: the next
# scheduled sync starts afresh after that anyway.
SYNC_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=5)
)
SYNC_ATTEMPT = timedelta(minutes=5)
SYNC_GIVE_UP = timedelta(hours=1)
ALERT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=5))


def sync_workflow_id(provider: str) -> str:
    """The schedule's id, and the prefix of its runs' and webhook-started syncs' ids."""
    return f"threepl-inventory-sync-{provider}"


@workflow.defn(name=THREEPL_INVENTORY_WORKFLOW_TYPE)
class ThreePLInventorySyncWorkflow:
    @workflow.run
    async def run(self, provider: str) -> InventorySyncSummary:
        """Sync `provider`'s stock levels into our books; email ops when the differences add up to more than
        the threshold (the activity's setting threepl_discrepancy_alert_units: `alert_due`). Returns the
        sync's summary."""
        workflow.set_current_details(f"pulling the stock levels of 3PL {provider}")
        summary: InventorySyncSummary = await workflow.execute_activity_method(
            ThreePLInventoryActivities.sync_threepl_inventory,
            provider,
            start_to_close_timeout=SYNC_ATTEMPT,
            schedule_to_close_timeout=SYNC_GIVE_UP,
            retry_policy=SYNC_RETRY,
            summary=f"inventory sync of {provider}",
        )
        if summary.alert_due:
            await workflow.execute_activity_method(
                NotificationActivities.alert_ops,
                discrepancy_alert(summary, occurrence=workflow.info().run_id),
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(hours=1),
                retry_policy=ALERT_RETRY,
                summary=f"3PL stock discrepancy of {provider}",
            )
        workflow.set_current_details(
            f"3PL {provider} at {summary.warehouse}: {len(summary.adjusted)} SKUs counted, "
            f"{summary.discrepancy_units} units, {len(summary.unknown_skus)} unknown"
        )
        return summary
