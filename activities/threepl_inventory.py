"""3PL inventory sync: pull a provider's stock levels and bring our books at its warehouse to them (each
difference a count with reason `3pl_sync`, see common.threepl.inventory_sync), then tell the orders a count
released and wake those waiting for stock that came in.

A transient 3PL error (an outage, 429, 5xx) is raised as is: the activity is retried and, since nothing was
changed before the levels came, a retry starts afresh. Any other refusal of the 3PL's is not retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.config import Settings
from common.integrations.threepl_api import ThreePLError, ThreePLProvider, ThreePLTransientError
from common.logs import describe_error
from common.models import workflow_id_for
from common.order_signals import deliver_order_signals, wake_backordered_orders
from common.store import Store
from common.threepl.inventory_sync import InventorySyncSummary, sync_inventory


class ThreePLInventoryActivities:
    def __init__(self, store: Store, providers: Mapping[str, ThreePLProvider], settings: Settings) -> None:
        self._store = store
        self._providers = dict(providers)
        self._settings = settings

    def activities(self) -> list[Callable[..., Any]]:
        return [self.sync_threepl_inventory]

    @activity.defn(name="sync_threepl_inventory")
    async def sync_threepl_inventory(self, provider: str) -> InventorySyncSummary:
        """Compare the provider's stock levels with our books at its warehouse and count each difference to
        the 3PL's figure; the summary (`alert_due`: ops are to hear of it). The orders a
        count released are told now (or by the worker's relay), backorders of SKUs that went up are woken."""
        client = self._providers.get(provider)
        if client is None:
            raise ApplicationError(
                f"unknown 3PL provider {provider!r} (configured: {', '.join(sorted(self._providers)) or 'none'})",
                type="UnknownThreePLProvider",
                non_retryable=True,
            )
        try:
            levels = await client.inventory_levels()
        except ThreePLTransientError:
            raise
        except ThreePLError as err:
            raise ApplicationError(
                f"3PL {provider} refused the inventory request: {err}", type=type(err).__name__, non_retryable=True
            ) from err
        summary, changes = await sync_inventory(self._store, provider, levels, datetime.now(UTC))
        summary.alert_due = summary.needs_alert(self._settings.threepl_discrepancy_alert_units)
        await self._tell(summary, [c.sku for c in changes if c.delta > 0])
        if summary.adjusted:
            activity.logger.info(
                "3PL %s inventory sync at %s: %d SKUs counted (%d units), %d unknown",
                provider,
                summary.warehouse,
                len(summary.adjusted),
                summary.discrepancy_units,
                len(summary.unknown_skus),
            )
        return summary

    async def _tell(self, summary: InventorySyncSummary, grown: list[str]) -> None:
        """Best effort, as after a count by hand: the outbox rows stay pending for the relay, and waiting
        orders recheck their stock periodically."""
        if not summary.released_orders and not grown:
            return
        try:
            client = activity.client()
            if summary.released_orders:
                ids = [workflow_id_for(o) for o in summary.released_orders]
                await deliver_order_signals(client, self._store, workflow_ids=ids)
            if grown:
                await wake_backordered_orders(client, self._store, grown)
        except Exception as err:
            activity.logger.warning("3PL inventory sync: telling orders failed (%s)", describe_error(err, limit=300))
