"""The notifications table: claims, and marks of sent or failed. Each operation is one statement over the
rows it names (no other lock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.inputs import require_text
from common.notifications.contracts import NotificationClaim, NotificationNotFound, NotificationRecord


class _KnownNotification(Exception):
    """Control flow in `NotificationStore.claim_notifications`: a key is already in the log."""


def _notification(r: Row[Any]) -> NotificationRecord:
    return NotificationRecord(
        r.key,
        r.order_id,
        r.event,
        r.channel,
        r.recipient,
        r.subject,
        r.body,
        r.status,
        r.provider_message_id,
        r.error,
        r.attempts,
        r.created_at,
        r.sent_at,
    )


def _claim_rows(claims: Sequence[NotificationClaim], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "key": c.key,
            "order_id": c.order_id,
            "event": c.event,
            "channel": c.channel,
            "recipient": c.recipient,
            "subject": c.subject,
            "body": c.body,
            "status": "sending",
            "attempts": 1,
            "created_at": now,
        }
        for c in claims
    ]


async def _claim_new(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """The usual case, every key new: one plain INSERT, and its row count says all were claimed."""
    n = t.notifications
    stmt = insert(conn, n).values(rows if len(rows) > 1 else rows[0]).on_conflict_do_nothing(index_elements=[n.c.key])
    inserted = await conn.execute(stmt)
    if inserted.rowcount != len(rows):
        raise _KnownNotification  # rolls this transaction back; the reclaim transaction follows
    return {row["key"] for row in rows}


async def _reclaim(conn: AsyncConnection, rows: list[dict[str, Any]]) -> set[str]:
    """A retry: a known key is claimed again unless it was sent, in the same statement (the WHERE is evaluated
    under the row's lock, so a concurrent "sent" is never claimed again). RETURNING names the rows inserted or
    updated, i.e. the claimed keys (it costs a fetch, hence not the first try)."""
    n = t.notifications
    ins = insert(conn, n).values(rows if len(rows) > 1 else rows[0])
    stmt = ins.on_conflict_do_update(
        index_elements=[n.c.key],
        set_={
            "status": "sending",
            "attempts": n.c.attempts + 1,
            "error": None,
            "recipient": ins.excluded.recipient,
            "subject": ins.excluded.subject,
            "body": ins.excluded.body,
        },
        where=n.c.status != "sent",
    ).returning(n.c.key)
    return set((await conn.execute(stmt)).scalars())


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim_notification(
        self,
        key: str,
        *,
        order_id: str,
        event: str,
        channel: str,
        recipient: str,
        subject: str | None,
        body: str,
    ) -> bool:
        """True if the caller should send now. False once `key` was sent. A key left "sending" (the sender
        crashed) or "failed" is claimed again, counting the attempt."""
        claim = NotificationClaim(key, order_id, event, channel, recipient, subject, body)
        return key in await self.claim_notifications([claim])

    async def claim_notifications(self, claims: Sequence[NotificationClaim]) -> set[str]:
        """`claim_notification` for several messages (e.g. the channels of one notification) in one
        transaction and one statement; returns the keys the caller should send now.
        Locking: the claimed rows (one statement)."""
        if not claims:
            return set()
        for claim in claims:
            require_text("notification key", claim.key)
        if len({c.key for c in claims}) != len(claims):
            raise ValueError("the same notification key twice in one claim")
        rows = _claim_rows(claims, utc_now())

        async def all_new(conn: AsyncConnection) -> set[str]:
            return await _claim_new(conn, rows)

        async def again(conn: AsyncConnection) -> set[str]:
            return await _reclaim(conn, rows)

        what = claims[0].key if len(claims) == 1 else f"{len(claims)} notifications of order {claims[0].order_id}"
        try:
            return await self._db.write(all_new, f"claim {what}")
        except _KnownNotification:
            return await self._db.write(again, f"claim {what} again")

    async def mark_notification_sent(self, key: str, provider_message_id: str) -> None:
        await self.mark_notifications_sent([(key, provider_message_id)])

    async def mark_notifications_sent(self, sent: Sequence[tuple[str, str]]) -> None:
        """Mark claimed notifications sent, each with its provider's message id, in one UPDATE statement. Every
        key that exists is marked; NotificationNotFound (for the first unknown key) is raised after that.
        Locking: the marked rows (one UPDATE)."""
        if not sent:
            return
        ids = dict(sent)
        if len(ids) != len(sent):
            raise ValueError("the same notification key twice in one mark")
        n = t.notifications

        async def op(conn: AsyncConnection) -> list[str]:
            provider_id = case(ids, value=n.c.key) if len(ids) > 1 else next(iter(ids.values()))
            result = await conn.execute(
                update(n)
                .where(n.c.key.in_(list(ids)))
                .values(status="sent", provider_message_id=provider_id, error=None, sent_at=utc_now())
            )
            if result.rowcount == len(ids):
                return []
            found = set((await conn.execute(select(n.c.key).where(n.c.key.in_(list(ids))))).scalars())
            return [key for key in ids if key not in found]

        what = f"notification {sent[0][0]}" if len(sent) == 1 else f"{len(sent)} notifications"
        missing = await self._db.write(op, f"mark {what} sent")
        if missing:
            raise NotificationNotFound(missing[0])

    async def mark_notification_failed(self, key: str, error: str) -> None:
        """Record why sending failed; a later claim may try again. Never downgrades a "sent" message.
        Locking: the row (its UPDATE)."""
        n = t.notifications

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(n).where(n.c.key == key, n.c.status != "sent").values(status="failed", error=error)
            )
            exists = (await conn.execute(select(func.count()).select_from(n).where(n.c.key == key))).scalar_one()
            if not exists:
                raise NotificationNotFound(key)

        await self._db.write(op, f"mark notification {key} failed")

    async def notifications(self, order_id: str | None = None) -> list[NotificationRecord]:
        stmt = select(t.notifications).order_by(t.notifications.c.created_at, t.notifications.c.key)
        if order_id is not None:
            stmt = stmt.where(t.notifications.c.order_id == order_id)
        return [_notification(r) for r in await self._db.read(stmt)]
