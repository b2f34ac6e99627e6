"""The order_signals table: `add_order_signal` writes a row inside another operation's transaction; the
OrderSignalStore lists rows and claims and marks them for the relay (common.order_signals)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, inserted_id, lock_key, utc_now
from common.db.inputs import require_int
from common.models import workflow_id_for
from common.outbox.contracts import OrderSignal


def _order_signal(r: Row[Any]) -> OrderSignal:
    return OrderSignal(
        r.id, r.workflow_id, r.kind, r.name, r.payload, r.created_at, r.attempts, r.delivered_at, r.last_error, r.note
    )


async def add_order_signal(
    conn: AsyncConnection, order_id: str, kind: str, name: str, payload: Any, now: datetime
) -> int:
    """Put a signal or update for the order's workflow in the outbox, in the caller's transaction. The
    caller holds the order's advisory lock, so one workflow's rows are numbered in commit order and the
    relay delivers them in the order they happened."""
    result = await conn.execute(
        t.order_signals.insert().values(
            workflow_id=workflow_id_for(order_id),
            kind=kind,
            name=name,
            payload=payload,
            created_at=now,
            attempts=0,
        )
    )
    return inserted_id(result)


class OrderSignalStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def order_signals(self, workflow_id: str | None = None, *, pending_only: bool = False) -> list[OrderSignal]:
        """Outbox rows (of one workflow), oldest first; `pending_only`: not delivered yet."""
        os_ = t.order_signals
        stmt = select(os_).order_by(os_.c.id)
        if workflow_id is not None:
            stmt = stmt.where(os_.c.workflow_id == workflow_id)
        if pending_only:
            stmt = stmt.where(os_.c.delivered_at.is_(None))
        return [_order_signal(r) for r in await self._db.read(stmt)]

    async def claim_order_signals(
        self,
        *,
        ids: Sequence[int] | None = None,
        workflow_ids: Sequence[str] | None = None,
        limit: int = 100,
        lease_s: float = 60.0,
    ) -> tuple[str, list[OrderSignal]]:
        """Claim pending rows for delivery, oldest first, for `lease_s` seconds: (claim token, rows). With
        `ids`, those rows and any older pending rows of their workflows (which must go first); with
        `workflow_ids`, only those workflows' rows. A workflow's rows are claimed in order and only up to one
        another caller holds, so each workflow's rows are delivered in order even with several relays; a
        claim whose holder died lapses after the lease.

        Locking: one advisory lock for claimers ("order-signals"), then the rows; nothing else is held."""
        require_int("limit", limit, minimum=1)
        if lease_s <= 0:
            raise ValueError(f"lease_s must be positive, got {lease_s!r}")
        os_ = t.order_signals
        token = secrets.token_hex(8)

        async def op(conn: AsyncConnection) -> list[OrderSignal]:
            await lock_key(conn, "order-signals")
            stmt = select(os_).where(os_.c.delivered_at.is_(None)).order_by(os_.c.id).limit(limit)
            if ids is not None:
                newest = (
                    await conn.execute(
                        select(os_.c.workflow_id, func.max(os_.c.id).label("top"))
                        .where(os_.c.id.in_(list(ids)))
                        .group_by(os_.c.workflow_id)
                    )
                ).all()
                if not newest:
                    return []
                stmt = stmt.where(or_(*(and_(os_.c.workflow_id == r.workflow_id, os_.c.id <= r.top) for r in newest)))
            if workflow_ids is not None:
                stmt = stmt.where(os_.c.workflow_id.in_(list(workflow_ids)))
            now = utc_now()
            blocked: set[str] = set()
            mine = []
            for r in await conn.execute(stmt):
                if r.workflow_id in blocked:
                    continue
                if r.claimed_until is not None and r.claimed_until > now:
                    blocked.add(r.workflow_id)  # another relay is delivering it: its later rows must wait
                    continue
                mine.append(_order_signal(r))
            if mine:
                await conn.execute(
                    update(os_)
                    .where(os_.c.id.in_([r.id for r in mine]))
                    .values(claimed_by=token, claimed_until=now + timedelta(seconds=lease_s))
                )
            return mine

        return token, await self._db.write(op, "claim order signals")

    async def mark_order_signal_delivered(self, signal_id: int, note: str | None = None) -> None:
        """The row was delivered (or there was nobody to deliver it to: `note` says why). Idempotent, and
        whoever holds the claim: it was delivered either way. Locking: the row (its UPDATE)."""
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id == signal_id, os_.c.delivered_at.is_(None))
                .values(
                    delivered_at=utc_now(),
                    attempts=os_.c.attempts + 1,
                    note=note,
                    claimed_by=None,
                    claimed_until=None,
                )
            )

        await self._db.write(op, f"mark order signal {signal_id} delivered")

    async def mark_order_signal_failed(self, signal_id: int, claim: str, error: str) -> None:
        """Delivery failed: count the attempt, keep the error, give up the claim; the row stays pending.
        Locking: the row (its UPDATE)."""
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id == signal_id, os_.c.delivered_at.is_(None), os_.c.claimed_by == claim)
                .values(attempts=os_.c.attempts + 1, last_error=error[:1000], claimed_by=None, claimed_until=None)
            )

        await self._db.write(op, f"mark order signal {signal_id} failed")

    async def release_order_signal_claims(self, signal_ids: Sequence[int], claim: str) -> None:
        """Give up claimed rows without trying them (an earlier row of their workflow failed this round).
        Locking: the rows (one UPDATE)."""
        if not signal_ids:
            return
        os_ = t.order_signals

        async def op(conn: AsyncConnection) -> None:
            await conn.execute(
                update(os_)
                .where(os_.c.id.in_(list(signal_ids)), os_.c.delivered_at.is_(None), os_.c.claimed_by == claim)
                .values(claimed_by=None, claimed_until=None)
            )

        await self._db.write(op, "release order signal claims")
