"""The notifications table: claims, marks of sent or failed, the providers' delivery reports (forward only) and
the email fallbacks of undelivered SMS. Each operation is one statement over the rows it names (no other lock),
or two in one transaction where it says so."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, insert, utc_now
from common.db.inputs import require_text
from common.notifications.contracts import (
    DELIVERY_FAILURES,
    DELIVERY_RANK,
    FALLBACK_PENDING,
    DeliveryUpdate,
    NotificationClaim,
    NotificationNotFound,
    NotificationRecord,
)


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
        r.delivery_status,
        r.delivery_error,
        r.delivery_updated_at,
        r.fallback_recipient,
        r.fallback_status,
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
            "fallback_recipient": c.fallback_recipient,
        }
        for c in claims
    ]


async def _claim_new(conn: AsyncConnection, rows: list[dict[str, Any]]) -> dict[str, datetime | None]:
    """The usual case, every key new: one plain INSERT, and its row count says all were claimed."""
    n = t.notifications
    stmt = insert(conn, n).values(rows if len(rows) > 1 else rows[0]).on_conflict_do_nothing(index_elements=[n.c.key])
    inserted = await conn.execute(stmt)
    if inserted.rowcount != len(rows):
        raise _KnownNotification  # rolls this transaction back; the reclaim transaction follows
    return {row["key"]: None for row in rows}


async def _reclaim(conn: AsyncConnection, rows: list[dict[str, Any]]) -> dict[str, datetime | None]:
    """A retry: a known key is claimed again unless it was sent, in the same statement (the WHERE is evaluated
    under the row's lock, so a concurrent "sent" is never claimed again). RETURNING names the rows inserted or
    updated, i.e. the claimed keys (it costs a fetch, hence not the first try), and for a key claimed before,
    when that first claim was."""
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
            "fallback_recipient": ins.excluded.fallback_recipient,
            # A new attempt: what the provider said of the last one (e.g. opted out) is not this one's
            "delivery_status": None,
            "delivery_error": None,
            "delivery_updated_at": None,
        },
        where=n.c.status != "sent",
    ).returning(n.c.key, n.c.attempts, n.c.created_at)
    return {r.key: (r.created_at if r.attempts > 1 else None) for r in await conn.execute(stmt)}


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
        return set(await self.claim_to_send(claims))

    async def claim_to_send(self, claims: Sequence[NotificationClaim]) -> dict[str, datetime | None]:
        """`claim_notifications`, with each claimed key's first claim if an earlier attempt claimed it too
        (None: this is the first). An earlier attempt may have died after the provider accepted the message:
        the caller asks the provider before sending it again."""
        if not claims:
            return {}
        for claim in claims:
            require_text("notification key", claim.key)
        if len({c.key for c in claims}) != len(claims):
            raise ValueError("the same notification key twice in one claim")
        rows = _claim_rows(claims, utc_now())

        async def all_new(conn: AsyncConnection) -> dict[str, datetime | None]:
            return await _claim_new(conn, rows)

        async def again(conn: AsyncConnection) -> dict[str, datetime | None]:
            return await _reclaim(conn, rows)

        what = claims[0].key if len(claims) == 1 else f"{len(claims)} notifications of order {claims[0].order_id}"
        try:
            return await self._db.write(all_new, f"claim {what}")
        except _KnownNotification:
            return await self._db.write(again, f"claim {what} again")

    async def recorded_provider_ids(self, provider_message_ids: Sequence[str]) -> set[str]:
        """Which of these provider message ids the log holds (each one a message of ours marked sent)."""
        if not provider_message_ids:
            return set()
        n = t.notifications
        rows = await self._db.read(
            select(n.c.provider_message_id).where(n.c.provider_message_id.in_(list(provider_message_ids)))
        )
        return {r.provider_message_id for r in rows}

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

    async def mark_notification_failed(
        self, key: str, error: str, *, delivery_status: str | None = None, delivery_error: str | None = None
    ) -> None:
        """Record why sending failed; a later claim may try again. Never downgrades a "sent" message. With
        `delivery_status`, also the provider's word on it (an email bounce: "bounced"; an SMS to a number that
        opted out: "opted-out"). Locking: the row (its UPDATE)."""
        n = t.notifications
        values: dict[str, Any] = {"status": "failed", "error": error}
        if delivery_status is not None:
            _check_delivery_status(delivery_status)
            values |= {
                "delivery_status": delivery_status,
                "delivery_error": delivery_error,
                "delivery_updated_at": utc_now(),
            }

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(update(n).where(n.c.key == key, n.c.status != "sent").values(**values))
            exists = (await conn.execute(select(func.count()).select_from(n).where(n.c.key == key))).scalar_one()
            if not exists:
                raise NotificationNotFound(key)

        await self._db.write(op, f"mark notification {key} failed")

    async def record_delivery(
        self, provider_message_id: str, status: str, error: str | None = None, *, key: str | None = None
    ) -> DeliveryUpdate:
        """The provider's report on a message it accepted (a Twilio status callback): the message is the one
        with this provider id, or, with `key`, the one under that key whose id is not recorded yet (the
        callback can come before the sender marked it sent). The status only moves forward (DELIVERY_RANK): a
        late "sent" after "delivered" changes nothing. A customer SMS reported undelivered or failed gets its
        email fallback pending, in the same statement (once: a fallback already decided is kept).
        Locking: the row (one UPDATE, then a read of it, in one transaction)."""
        require_text("provider message id", provider_message_id)
        rank = _check_delivery_status(status)
        n = t.notifications
        match = n.c.provider_message_id == provider_message_id
        if key is not None:
            match = or_(match, and_(n.c.key == key, n.c.provider_message_id.is_(None)))
        behind = [s for s, r in DELIVERY_RANK.items() if r < rank]
        values: dict[str, Any] = {"delivery_status": status, "delivery_error": error, "delivery_updated_at": utc_now()}
        if status in DELIVERY_FAILURES:
            customer_sms = and_(n.c.channel == "sms", n.c.key.like("notify:%"), n.c.fallback_status.is_(None))
            values["fallback_status"] = case((customer_sms, FALLBACK_PENDING), else_=n.c.fallback_status)

        async def op(conn: AsyncConnection) -> DeliveryUpdate:
            moved = await conn.execute(
                update(n)
                .where(match, or_(n.c.delivery_status.is_(None), n.c.delivery_status.in_(behind)))
                .values(**values)
                .returning(n.c.key)
            )
            changed = bool(moved.scalars().all())
            rows = (await conn.execute(select(n).where(match).order_by(n.c.created_at).limit(1))).all()
            return DeliveryUpdate(_notification(rows[0]) if rows else None, changed)

        return await self._db.write(op, f"record delivery of {provider_message_id}")

    async def get(self, key: str) -> NotificationRecord | None:
        rows = await self._db.read(select(t.notifications).where(t.notifications.c.key == key))
        return _notification(rows[0]) if rows else None

    async def set_fallback_status(self, key: str, status: str, *, only_from: str | None = None) -> bool:
        """What became of an SMS's email fallback (FALLBACK_*); with `only_from`, only if it is that now (the
        relay marks "started" only what is still pending). False if nothing changed. Locking: the row."""
        n = t.notifications
        where = [n.c.key == key]
        if only_from is not None:
            where.append(n.c.fallback_status == only_from)

        async def op(conn: AsyncConnection) -> bool:
            return bool((await conn.execute(update(n).where(*where).values(fallback_status=status))).rowcount)

        return await self._db.write(op, f"set email fallback of {key} {status}")

    async def pending_fallbacks(self, limit: int = 100) -> list[NotificationRecord]:
        """SMS whose email fallback is to start, oldest report first (no lock)."""
        n = t.notifications
        stmt = (
            select(n)
            .where(n.c.fallback_status == FALLBACK_PENDING)
            .order_by(n.c.delivery_updated_at, n.c.key)
            .limit(limit)
        )
        return [_notification(r) for r in await self._db.read(stmt)]

    async def notifications(self, order_id: str | None = None, *, limit: int | None = None) -> list[NotificationRecord]:
        """The log (of one order), oldest first; with `limit`, only the latest `limit` messages."""
        n = t.notifications
        stmt = select(n)
        if order_id is not None:
            stmt = stmt.where(n.c.order_id == order_id)
        if limit is None:
            stmt = stmt.order_by(n.c.created_at, n.c.key)
            return [_notification(r) for r in await self._db.read(stmt)]
        latest = await self._db.read(stmt.order_by(n.c.created_at.desc(), n.c.key.desc()).limit(limit))
        return [_notification(r) for r in reversed(latest)]


def _check_delivery_status(status: str) -> int:
    if status not in DELIVERY_RANK:
        raise ValueError(f"unknown delivery status {status!r}: one of {', '.join(DELIVERY_RANK)}")
    return DELIVERY_RANK[status]
