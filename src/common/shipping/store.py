"""The shipments table: one label record per label key. Each operation is one statement's row lock (no order
lock): a void committed meanwhile is never overwritten by a purchase. A carrier's tracking event is recorded
with the signal that tells its order, in one transaction (record_tracking_event)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.db import tables as t
from common.db.database import Database, insert, lock_key, utc_now
from common.db.errors import StoreError
from common.db.inputs import require_int, require_text
from common.outbox.store import add_order_signal
from common.shipping.contracts import LabelNotFound, LabelRecord, TrackingEventRecord
from common.webhooks.store import record_event


def _label(r: Row[Any]) -> LabelRecord:
    return LabelRecord(
        r.key,
        r.order_id,
        r.carrier_shipment_id,
        r.carrier,
        r.service,
        r.rate_cents,
        r.tracking_number,
        r.label_url,
        r.tracking_url,
        r.status,
        r.created_at,
        r.updated_at,
    )


class LabelStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, key: str) -> LabelRecord | None:
        rows = await self._db.read(select(t.shipments).where(t.shipments.c.key == key))
        return _label(rows[0]) if rows else None

    async def for_order(self, order_id: str) -> list[LabelRecord]:
        stmt = (
            select(t.shipments)
            .where(t.shipments.c.order_id == order_id)
            .order_by(t.shipments.c.created_at, t.shipments.c.key)
        )
        return [_label(r) for r in await self._db.read(stmt)]

    async def record_carrier_shipment(self, key: str, order_id: str, carrier_shipment_id: str) -> LabelRecord:
        """Record the carrier shipment created for `key` (status "created"). If `key` is already recorded,
        the existing record wins and is returned unchanged. Locking: the label row (its INSERT)."""
        require_text("shipment key", key)
        require_text("order_id", order_id)
        require_text("carrier_shipment_id", carrier_shipment_id)

        async def op(conn: AsyncConnection) -> LabelRecord:
            now = utc_now()
            await conn.execute(
                insert(conn, t.shipments)
                .values(
                    key=key,
                    order_id=order_id,
                    carrier_shipment_id=carrier_shipment_id,
                    status="created",
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[t.shipments.c.key])
            )
            return _label((await conn.execute(select(t.shipments).where(t.shipments.c.key == key))).one())

        return await self._db.write(op, f"record shipment {key}")

    async def mark_purchased(
        self,
        key: str,
        *,
        carrier: str,
        service: str,
        rate_cents: int,
        tracking_number: str,
        label_url: str,
        tracking_url: str,
    ) -> LabelRecord:
        """The label for `key` was bought: status "purchased" with its details (idempotent). StoreError if it
        was voided, even by a void committed while this runs. Locking: the shipment row (its UPDATE)."""
        require_int("rate_cents", rate_cents, minimum=0)
        sh = t.shipments

        async def op(conn: AsyncConnection) -> LabelRecord:
            # One conditional UPDATE: a void committed while this runs is seen (READ COMMITTED re-checks the
            # WHERE on the row it waited for), so a voided label is never overwritten.
            result = await conn.execute(
                update(sh)
                .where(sh.c.key == key, sh.c.status != "voided")
                .values(
                    status="purchased",
                    carrier=carrier,
                    service=service,
                    rate_cents=rate_cents,
                    tracking_number=tracking_number,
                    label_url=label_url,
                    tracking_url=tracking_url,
                    updated_at=utc_now(),
                )
            )
            row = (await conn.execute(select(sh).where(sh.c.key == key))).first()
            if row is None:
                raise LabelNotFound(key)
            if result.rowcount != 1:
                raise StoreError(f"shipment {key!r} was voided; buy under a new shipment number")
            return _label(row)

        return await self._db.write(op, f"record label {key}")

    async def mark_voided(self, key: str) -> LabelRecord:
        """The label for `key` was refunded/voided (idempotent). Locking: the shipment row (its UPDATE)."""
        sh = t.shipments

        async def op(conn: AsyncConnection) -> LabelRecord:
            await conn.execute(
                update(sh).where(sh.c.key == key, sh.c.status != "voided").values(status="voided", updated_at=utc_now())
            )
            row = (await conn.execute(select(sh).where(sh.c.key == key))).first()
            if row is None:
                raise LabelNotFound(key)
            return _label(row)

        return await self._db.write(op, f"void shipment {key}")

    async def record_tracking_event(
        self, source: str, event_id: str, tracking_number: str, signal: dict[str, Any], *, kind: str = "tracker.updated"
    ) -> TrackingEventRecord:
        """Record a carrier's tracking event once (webhook_events) and, the first time, if a parcel of ours has
        that tracking number (our label, or one a 3PL shipped with), put `signal` (the order's `carrier_tracking`
        signal) in the order-signal outbox, in the same transaction: a crash or an engine away loses nothing, a
        repeat does nothing. Locking: the event row, then the order's advisory lock (the outbox's rule)."""
        require_text("tracking number", tracking_number)

        async def op(conn: AsyncConnection) -> TrackingEventRecord:
            if not await record_event(conn, source, event_id, kind=kind, subject=tracking_number):
                return TrackingEventRecord(first_time=False, order_id=None, signal_id=None)
            order_id = await _order_tracked_as(conn, tracking_number)
            if order_id is None:
                return TrackingEventRecord(first_time=True, order_id=None, signal_id=None)
            await lock_key(conn, f"order:{order_id}")
            signal_id = await add_order_signal(conn, order_id, "signal", "carrier_tracking", signal, utc_now())
            return TrackingEventRecord(first_time=True, order_id=order_id, signal_id=signal_id)

        return await self._db.write(op, f"record tracking event {event_id}")


async def _order_tracked_as(conn: AsyncConnection, tracking_number: str) -> str | None:
    """The order whose parcel has this tracking number: on a label we bought, else one a 3PL shipped with."""
    sh, tp = t.shipments, t.threepl_parcels
    for table in (sh, tp):
        when = table.c.created_at if table is sh else table.c.submitted_at
        stmt = select(table.c.order_id).where(table.c.tracking_number == tracking_number).order_by(when).limit(1)
        order_id = (await conn.execute(stmt)).scalar()
        if order_id is not None:
            return str(order_id)
    return None
