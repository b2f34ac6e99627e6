"""3PL inventory sync through the engine: now, waiting for its summary (`fulfill 3pl sync-inventory`), or
started by the 3PL's inventory webhook (one sync per provider and minute, however many webhooks come)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import TemporalError, WorkflowAlreadyStartedError

from common.config import Settings
from common.errors import FulfillmentError, InvalidRequest, NotFound
from common.integrations.threepl_providers import PROVIDER_NAMES
from common.logs import describe_error
from common.threepl.inventory_sync import InventorySyncSummary
from workflows.threepl_inventory import ThreePLInventorySyncWorkflow, sync_workflow_id


class ThreePLProviderNotFound(NotFound, InvalidRequest):
    """No 3PL of that name is configured."""


class ThreePLSyncFailed(FulfillmentError):
    """The sync ended without changing our books: the 3PL refused (a bad token...) or stayed down too long."""


def require_provider(provider: str) -> None:
    if provider not in PROVIDER_NAMES:
        raise ThreePLProviderNotFound(
            f"no 3PL provider {provider!r} (configured: {', '.join(PROVIDER_NAMES) or 'none'})"
        )


async def sync_now(client: Client, settings: Settings, provider: str) -> InventorySyncSummary:
    """Run a sync of `provider` now and wait for its summary (a 3PL outage is waited out by the workflow's
    retries). ThreePLProviderNotFound for a provider not configured; ThreePLSyncFailed if it failed."""
    require_provider(provider)
    workflow_id = f"{sync_workflow_id(provider)}-now-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    try:
        return await client.execute_workflow(
            ThreePLInventorySyncWorkflow.run,
            provider,
            id=workflow_id,
            task_queue=settings.task_queue,
            static_summary=f"Inventory sync of 3PL {provider} (asked for)",
        )
    except WorkflowFailureError as err:
        cause = err.cause
        while isinstance(cause, TemporalError) and cause.cause is not None:  # the activity's own error
            cause = cause.cause
        raise ThreePLSyncFailed(
            f"3PL {provider} inventory sync failed, nothing changed: {describe_error(cause or err, limit=300)}"
        ) from None


def webhook_workflow_id(provider: str, at: datetime) -> str:
    return f"{sync_workflow_id(provider)}-{at.astimezone(UTC):%Y%m%dT%H%M}"


async def inventory_changed(
    client: Client, settings: Settings, provider: str, *, now: datetime | None = None
) -> tuple[str, bool]:
    """The 3PL says its stock changed: start a sync, one per provider and minute (a burst of webhooks is one
    sync). (Workflow id, True if this call started it.)"""
    require_provider(provider)
    workflow_id = webhook_workflow_id(provider, now or datetime.now(UTC))
    try:
        await client.start_workflow(
            ThreePLInventorySyncWorkflow.run,
            provider,
            id=workflow_id,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"Inventory sync of 3PL {provider} (its inventory webhook)",
        )
    except WorkflowAlreadyStartedError:
        return workflow_id, False
    return workflow_id, True


class ThreePLInventoryApi:
    """FulfillmentApi's 3PL inventory-sync methods (kept here so the API's module stays short)."""

    client: Client
    settings: Settings

    async def sync_threepl_inventory(self, provider: str) -> InventorySyncSummary:
        """Sync the 3PL's stock levels into our books now; its summary (see sync_now)."""
        return await sync_now(self.client, self.settings, provider)

    async def threepl_inventory_changed(self, provider: str) -> tuple[str, bool]:
        """The 3PL's inventory webhook: start this minute's sync of `provider` unless it is started already."""
        return await inventory_changed(self.client, self.settings, provider)
