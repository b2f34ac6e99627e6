"""The webhook_events table: each provider event id once per source. Providers deliver at least once and
retry on any doubt, so the same event comes twice; only the first one is acted on."""

from __future__ import annotations

from typing import Any

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.inputs import require_text


async def record_event(conn: Any, source: str, event_id: str, *, kind: str, subject: str | None) -> bool:
    """Record the event in the caller's transaction; True the first time, False for a repeat."""
    require_text("webhook event id", event_id)
    w = t.webhook_events
    row = {"source": source, "event_id": event_id, "kind": kind, "subject": subject, "received_at": utc_now()}
    stmt = insert(conn, w).values(row).on_conflict_do_nothing(index_elements=[w.c.source, w.c.event_id])
    return bool((await conn.execute(stmt)).rowcount == 1)


class WebhookEventStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def first_time(self, source: str, event_id: str, *, kind: str, subject: str | None = None) -> bool:
        """Records the event; True the first time (act on it), False for a repeat (acknowledge, do nothing).
        Locking: the one row (one statement)."""

        async def op(conn: Any) -> bool:
            return await record_event(conn, source, event_id, kind=kind, subject=subject)

        return await self._db.write(op, "record webhook event")

    async def forget(self, source: str, event_id: str) -> None:
        """Undo `first_time` for an event whose handling failed before it changed anything, so the provider's
        retry is acted on. Locking: the one row."""
        w = t.webhook_events

        async def op(conn: Any) -> None:
            await conn.execute(w.delete().where(w.c.source == source, w.c.event_id == event_id))

        await self._db.write(op, "forget webhook event")
