"""The threepl_parcels and threepl_sync_cursors tables: each parcel handed to a 3PL, its state as the 3PL told us
(forward moves only: RANK), and where each 3PL's reconciliation pull starts. A 3PL's webhook is recorded with
the signal that tells its order in one transaction (record_event), like a carrier's tracking event."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, insert, lock_key, utc_now
from common.db.inputs import require_text
from common.outbox.store import add_order_signal
from common.threepl.contracts import (
    FINAL_STATES,
    THREEPL_UPDATE,
    ThreePLParcel,
    ThreePLState,
    ThreePLSubmission,
    ThreePLUpdate,
    moves_forward,
)
from common.webhooks.store import record_event

_p = t.threepl_parcels


def _parcel(r: Row[Any]) -> ThreePLParcel:
    return ThreePLParcel(
        r.reference_id,
        r.order_id,
        r.shipment_no,
        r.provider,
        r.warehouse,
        r.provider_order_id,
        ThreePLState(r.state),
        r.reason,
        r.carrier,
        r.service,
        r.tracking_number,
        r.tracking_url,
        r.submitted_at,
        r.accepted_at,
        r.shipped_at,
        r.delivered_at,
        r.provider_updated_at,
        r.updated_at,
    )


@dataclass(frozen=True)
class ThreePLEventRecord:
    """What recording a 3PL's webhook did (ThreePLStore.record_event)."""

    first_time: bool  # False: the event id was received before; nothing was done this time
    parcel: ThreePLParcel | None  # the parcel it is about; None: not one of ours
    signal_id: int | None  # the outbox row that tells the order (None: nothing new for it)


class ThreePLStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, reference: str) -> ThreePLParcel | None:
        rows = await self._db.read(select(_p).where(_p.c.reference_id == reference))
        return _parcel(rows[0]) if rows else None

    async def for_order(self, order_id: str) -> list[ThreePLParcel]:
        stmt = select(_p).where(_p.c.order_id == order_id).order_by(_p.c.shipment_no)
        return [_parcel(r) for r in await self._db.read(stmt)]

    async def by_tracking_number(self, tracking_number: str) -> ThreePLParcel | None:
        stmt = select(_p).where(_p.c.tracking_number == tracking_number).order_by(_p.c.submitted_at).limit(1)
        rows = await self._db.read(stmt)
        return _parcel(rows[0]) if rows else None

    async def parcels(
        self, *, provider: str | None = None, states: Sequence[ThreePLState] | None = None, limit: int = 200
    ) -> list[ThreePLParcel]:
        """Parcels at 3PLs, newest submission first: of one provider, in some states."""
        stmt = select(_p).order_by(_p.c.submitted_at.desc(), _p.c.reference_id).limit(limit)
        if provider is not None:
            stmt = stmt.where(_p.c.provider == provider)
        if states:
            stmt = stmt.where(_p.c.state.in_([s.value for s in states]))
        return [_parcel(r) for r in await self._db.read(stmt)]

    async def oldest_open_submission(self, provider: str) -> datetime | None:
        """When the oldest parcel at `provider` not in a final state was submitted; None if none is open."""
        stmt = select(func.min(_p.c.submitted_at)).where(
            _p.c.provider == provider, _p.c.state.not_in([s.value for s in FINAL_STATES])
        )
        rows = await self._db.read(stmt)
        oldest: datetime | None = rows[0][0] if rows else None
        return oldest

    async def record_submission(
        self, submission: ThreePLSubmission, provider_order_id: str | None, answer: ThreePLUpdate
    ) -> ThreePLParcel:
        """Record the parcel as handed over (state SUBMITTED), then apply the 3PL's answer. A repeat (the same
        reference) keeps the first submission time and applies the answer only if it moves forward. Locking:
        the parcel's row."""
        reference = submission.reference_id

        async def op(conn: AsyncConnection) -> ThreePLParcel:
            now = utc_now()
            await conn.execute(
                insert(conn, _p)
                .values(
                    reference_id=reference,
                    order_id=submission.order_id,
                    shipment_no=submission.shipment_no,
                    provider=submission.provider,
                    warehouse=submission.warehouse,
                    provider_order_id=provider_order_id,
                    state=ThreePLState.SUBMITTED.value,
                    submitted_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[_p.c.reference_id])
            )
            await _apply(conn, answer, now)
            return _parcel((await conn.execute(select(_p).where(_p.c.reference_id == reference))).one())

        return await self._db.write(op, f"record 3PL submission {reference}")

    async def apply(self, news: ThreePLUpdate) -> bool:
        """Apply news of a recorded parcel if it moves it forward; True if it did. Locking: the parcel's row."""

        async def op(conn: AsyncConnection) -> bool:
            return await _apply(conn, news, utc_now())

        return await self._db.write(op, f"record 3PL news of {news.reference_id}")

    async def record_event(self, source: str, event_id: str, kind: str, news: ThreePLUpdate) -> ThreePLEventRecord:
        """Record a 3PL's webhook once (webhook_events) and, the first time, if it is about a parcel of ours and
        moves it forward, apply it and put the order's `threepl_update` signal in the order-signal outbox, in the
        same transaction. Locking: the event row, then the order's advisory lock, then the parcel's row."""
        require_text("webhook event id", event_id)

        async def op(conn: AsyncConnection) -> ThreePLEventRecord:
            if not await record_event(conn, source, event_id, kind=kind, subject=news.reference_id):
                return ThreePLEventRecord(first_time=False, parcel=None, signal_id=None)
            parcel, signal_id = await _apply_and_signal(conn, news)
            return ThreePLEventRecord(first_time=True, parcel=parcel, signal_id=signal_id)

        return await self._db.write(op, f"record 3PL event {event_id}")

    async def signal_news(self, news: ThreePLUpdate) -> int | None:
        """What a reconciliation pull found: apply it and, if it moved the parcel, put the order's signal in the
        outbox (one transaction); the outbox row id, None if it was not news. Locking: as record_event."""

        async def op(conn: AsyncConnection) -> int | None:
            return (await _apply_and_signal(conn, news))[1]

        return await self._db.write(op, f"record 3PL news of {news.reference_id}")

    async def held_units_handed_over(self, warehouse: str) -> dict[str, int]:
        """sku -> units our books still hold at `warehouse` for parcels handed to its 3PL (not rejected or
        cancelled there): in the 3PL's on hand while it has them, gone from it once it shipped them, ours until
        the order hears so."""
        rv = t.reservations
        handed = (
            select(_p.c.reference_id)
            .where(
                _p.c.order_id == rv.c.order_id,
                _p.c.shipment_no == rv.c.shipment_no,
                _p.c.state.not_in([ThreePLState.REJECTED.value, ThreePLState.CANCELLED.value]),
            )
            .exists()
        )
        stmt = (
            select(rv.c.sku, func.sum(rv.c.quantity).label("units"))
            .where(rv.c.warehouse == warehouse, rv.c.status == "held", handed)
            .group_by(rv.c.sku)
        )
        return {r.sku: int(r.units) for r in await self._db.read(stmt)}

    # -- cursors ---------------------------------------------------------------------------------------------

    async def orders_since(self, provider: str) -> datetime | None:
        rows = await self._db.read(
            select(t.threepl_sync_cursors.c.orders_since).where(t.threepl_sync_cursors.c.provider == provider)
        )
        return rows[0].orders_since if rows else None

    async def advance_orders_since(self, provider: str, since: datetime) -> None:
        """The next reconciliation pull of `provider` starts at `since` (never moves back)."""
        await self._set_cursor(provider, "orders_since", since)

    async def inventory_synced_at(self, provider: str) -> datetime | None:
        rows = await self._db.read(
            select(t.threepl_sync_cursors.c.inventory_synced_at).where(t.threepl_sync_cursors.c.provider == provider)
        )
        return rows[0].inventory_synced_at if rows else None

    async def mark_inventory_synced(self, provider: str, at: datetime) -> None:
        await self._set_cursor(provider, "inventory_synced_at", at)

    async def _set_cursor(self, provider: str, column: str, at: datetime) -> None:
        c = t.threepl_sync_cursors

        async def op(conn: AsyncConnection) -> None:
            now = utc_now()
            await conn.execute(
                insert(conn, c)
                .values(provider=provider, updated_at=now)
                .on_conflict_do_nothing(index_elements=[c.c.provider])
            )
            col = c.c[column]
            await conn.execute(
                update(c)
                .where(c.c.provider == provider, (col.is_(None)) | (col < at))
                .values({column: at, "updated_at": now})
            )

        await self._db.write(op, f"advance the 3PL cursor of {provider}")


async def _apply_and_signal(conn: AsyncConnection, news: ThreePLUpdate) -> tuple[ThreePLParcel | None, int | None]:
    """In the caller's transaction: the parcel `news` is about (None: not ours) and, if the news moves it forward,
    the outbox row of its order's `threepl_update` signal. Locking: the order's advisory lock, then the row."""
    row = (await conn.execute(select(_p).where(_p.c.reference_id == news.reference_id))).first()
    if row is None:
        return None, None
    parcel = _parcel(row)
    await lock_key(conn, f"order:{parcel.order_id}")
    now = utc_now()
    if not await _apply(conn, news, now):
        return parcel, None
    payload = news.model_copy(update={"shipment_no": parcel.shipment_no}).model_dump(mode="json")
    return parcel, await add_order_signal(conn, parcel.order_id, "signal", THREEPL_UPDATE, payload, now)


async def _apply(conn: AsyncConnection, news: ThreePLUpdate, now: datetime) -> bool:
    row = (await conn.execute(select(_p).where(_p.c.reference_id == news.reference_id).with_for_update())).first()
    if row is None:
        return False
    current = ThreePLState(row.state)
    if not moves_forward(current, row.provider_updated_at, news):
        return False
    values: dict[str, Any] = {"state": news.state.value, "updated_at": now, "reason": news.reason}
    if news.changed_at is not None:
        values["provider_updated_at"] = news.changed_at
    for column in ("carrier", "service", "tracking_number", "tracking_url"):
        if getattr(news, column) is not None:
            values[column] = getattr(news, column)
    at = news.changed_at or now
    if news.state == ThreePLState.ACCEPTED and row.accepted_at is None:
        values["accepted_at"] = at
    if news.state in (ThreePLState.SHIPPED, ThreePLState.DELIVERED) and row.shipped_at is None:
        values["shipped_at"] = at
    if news.state == ThreePLState.DELIVERED:
        values["delivered_at"] = at
    await conn.execute(update(_p).where(_p.c.reference_id == news.reference_id).values(values))
    return True
