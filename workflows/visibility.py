"""Search attribute updates, batched: one upsert when the workflow waits, not one per change.

Visibility (what `temporal workflow list` and the Web UI's filters see) changes only when a workflow task
completes. A task that runs several local activities in a row (reserve stock, create the pick task) passes
through several statuses on the way, and upserting each would write a history event and a visibility update on
the server that nobody could ever see.
Batched, the changes are upserted together once no local activity is running, i.e. when the workflow waits
for the outside world (a signal, a timer, a regular activity) or when it closes (`flush`).

A local activity that keeps failing retries for a while (timer-driven after the first minute): its pending
changes are published at the first wake-up past `MAX_DELAY`, so ops lists are never more than about a retry
interval behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

MAX_DELAY = timedelta(seconds=10)


class SearchAttributeBatch:
    """Immediate until `start_batching` (orders recorded before batching existed replay unchanged)."""

    def __init__(self) -> None:
        self._pending: dict[str, SearchAttributeUpdate[Any]] = {}
        self._pending_since: datetime | None = None
        self._local_steps = 0
        self._publisher: asyncio.Task[None] | None = None

    def start_batching(self) -> None:
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_when_waiting())

    def stage(self, updates: Sequence[SearchAttributeUpdate[Any]]) -> None:
        """Upsert `updates` now, or with the next batch (the last value of a key wins)."""
        if not updates:
            return
        if self._publisher is None:
            workflow.upsert_search_attributes(list(updates))
            return
        for update in updates:
            self._pending[update.key.name] = update
        if self._pending_since is None:
            self._pending_since = workflow.now()

    def flush(self) -> None:
        """Upsert what is pending now: before the workflow closes, so its final status is what lists show."""
        if self._pending:
            workflow.upsert_search_attributes(list(self._pending.values()))
        self._pending.clear()
        self._pending_since = None

    @contextmanager
    def local_step(self) -> Iterator[None]:
        """Around a local activity: changes made meanwhile wait for the next batch."""
        self._local_steps += 1
        try:
            yield
        finally:
            self._local_steps -= 1

    def _due(self) -> bool:
        if not self._pending:
            return False
        if self._local_steps == 0:
            return True
        return self._pending_since is not None and workflow.now() - self._pending_since >= MAX_DELAY

    async def _publish_when_waiting(self) -> None:
        while True:
            await workflow.wait_condition(self._due)
            self.flush()
