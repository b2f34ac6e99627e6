"""The returns tables: RMAs and their lines, inspection (restock / write-off), refunds. One transaction per
call, idempotent by business key (the RMA id, `refund:<rma>`), every stock change with its ledger row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from common.catalog.store import require_skus, resolve_warehouse
from common.db import tables as t
from common.db.database import Database, lock_key, utc_now
from common.db.errors import StoreError
from common.inventory.books import add_ledger
from common.returns.contracts import RefundRecord, RmaLineRecord, RmaNotFound, RmaRecord


def _refund(r: Row[Any]) -> RefundRecord:
    return RefundRecord(r.key, r.refund_id, r.rma_id, r.order_id, r.amount_cents, r.currency, r.status, r.created_at)


class ReturnsStore:
    """Returns bookkeeping over the rmas, rma_lines and refunds tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_rma(
        self,
        rma_id: str,
        order_id: str,
        *,
        reason: str,
        lines: Sequence[tuple[str, int]],
        exchange: bool = False,
        replacement_order_id: str | None = None,
        note: str = "",
    ) -> RmaRecord:
        """Create the RMA with its authorised lines, status REQUESTED. Idempotent by RMA id: a second call
        returns the RMA as it is. Locking: the RMA's advisory lock ("rma:<id>"), then its rows."""
        if not lines:
            raise ValueError("an RMA needs at least one line")

        async def op(conn: AsyncConnection) -> None:
            await lock_key(conn, f"rma:{rma_id}")
            exists = (await conn.execute(select(t.rmas.c.rma_id).where(t.rmas.c.rma_id == rma_id))).first()
            if exists is not None:
                return
            await require_skus(conn, [sku for sku, _ in lines])
            now = utc_now()
            await conn.execute(
                t.rmas.insert().values(
                    rma_id=rma_id,
                    order_id=order_id,
                    reason=reason,
                    exchange=exchange,
                    replacement_order_id=replacement_order_id,
                    status="REQUESTED",
                    note=note,
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                t.rma_lines.insert(),
                [{"rma_id": rma_id, "sku": sku, "quantity": qty, "resellable": 0, "damaged": 0} for sku, qty in lines],
            )

        await self._db.write(op, f"record RMA {rma_id}")
        rma = await self.get_rma(rma_id)
        assert rma is not None
        return rma

    async def set_status(
        self,
        rma_id: str,
        status: str,
        *,
        note: str | None = None,
        carrier: str | None = None,
        tracking_number: str | None = None,
        label_url: str | None = None,
    ) -> RmaRecord:
        """Locking: the RMA row (its UPDATE)."""
        if status not in t.RMA_STATUSES:
            raise ValueError(f"unknown RMA status {status!r}")
        values: dict[str, Any] = {"status": status, "updated_at": utc_now()}
        for name, value in (
            ("note", note),
            ("carrier", carrier),
            ("tracking_number", tracking_number),
            ("label_url", label_url),
        ):
            if value is not None:
                values[name] = value

        async def op(conn: AsyncConnection) -> None:
            result = await conn.execute(update(t.rmas).where(t.rmas.c.rma_id == rma_id).values(**values))
            if result.rowcount == 0:
                raise RmaNotFound(rma_id)

        await self._db.write(op, f"set RMA {rma_id} {status}")
        rma = await self.get_rma(rma_id)
        assert rma is not None
        return rma

    async def get_rma(self, rma_id: str) -> RmaRecord | None:
        rows = await self._rmas(t.rmas.c.rma_id == rma_id)
        return rows[0] if rows else None

    async def rmas_for_order(self, order_id: str) -> list[RmaRecord]:
        return await self._rmas(t.rmas.c.order_id == order_id)

    async def _rmas(self, where: Any) -> list[RmaRecord]:
        async with self._db.connect() as conn:
            rmas = (await conn.execute(select(t.rmas).where(where).order_by(t.rmas.c.created_at))).all()
            ids = [r.rma_id for r in rmas]
            lines = (
                await conn.execute(select(t.rma_lines).where(t.rma_lines.c.rma_id.in_(ids)).order_by(t.rma_lines.c.sku))
            ).all()
        by_rma: dict[str, list[RmaLineRecord]] = {}
        for li in lines:
            by_rma.setdefault(li.rma_id, []).append(RmaLineRecord(li.sku, li.quantity, li.resellable, li.damaged))
        return [
            RmaRecord(
                r.rma_id,
                r.order_id,
                r.reason,
                bool(r.exchange),
                r.replacement_order_id,
                r.status,
                r.carrier,
                r.tracking_number,
                r.label_url,
                r.note,
                r.created_at,
                r.updated_at,
                by_rma.get(r.rma_id, []),
            )
            for r in rmas
        ]

    async def record_inspection(
        self,
        rma_id: str,
        *,
        resellable: Mapping[str, int],
        damaged: Mapping[str, int],
        warehouses: Mapping[str, str],
        reason: str = "damaged on return",
    ) -> None:
        """What the warehouse found: the RMA lines' counts, and a "writeoff" ledger row (zero on-hand delta,
        ref = the RMA) per damaged SKU. Idempotent: counts are set, not added, and a write-off is written once
        per (RMA, sku, warehouse). Resellable units go back on hand through StockStore.return_stock (its own
        idempotent transaction), called by the inspection activity.
        Locking: the return's advisory lock ("return:<id>", the one `StockStore.return_stock` takes), then the
        RMA's lines."""
        lg = t.stock_ledger

        async def op(conn: AsyncConnection) -> None:
            await lock_key(conn, f"return:{rma_id}")
            authorised = {
                r.sku: r.quantity
                for r in (await conn.execute(select(t.rma_lines).where(t.rma_lines.c.rma_id == rma_id))).all()
            }
            if not authorised:
                raise RmaNotFound(rma_id)
            for sku in set(resellable) | set(damaged):
                if sku not in authorised:
                    raise StoreError(f"RMA {rma_id} has no line for {sku}")
                found = resellable.get(sku, 0) + damaged.get(sku, 0)
                if found > authorised[sku]:
                    raise StoreError(f"RMA {rma_id}: {found} x {sku} received, only {authorised[sku]} authorised")
            for sku in authorised:
                await conn.execute(
                    update(t.rma_lines)
                    .where(t.rma_lines.c.rma_id == rma_id, t.rma_lines.c.sku == sku)
                    .values(resellable=resellable.get(sku, 0), damaged=damaged.get(sku, 0))
                )
            now = utc_now()
            for sku, qty in sorted(damaged.items()):
                if qty <= 0:
                    continue
                code = await resolve_warehouse(conn, warehouses.get(sku))
                done = (
                    await conn.execute(
                        select(lg.c.id).where(
                            lg.c.kind == "writeoff", lg.c.ref == rma_id, lg.c.sku == sku, lg.c.warehouse == code
                        )
                    )
                ).first()
                if done is None:
                    await add_ledger(
                        conn, [(sku, code, 0, 0)], "writeoff", rma_id, f"{reason}: {qty} unit(s) written off", now
                    )

        await self._db.write(op, f"inspect RMA {rma_id}")

    async def record_refund(
        self,
        key: str,
        *,
        refund_id: str,
        rma_id: str | None,
        order_id: str,
        amount_cents: int,
        currency: str = "USD",
    ) -> tuple[RefundRecord, bool]:
        """Record a refund the payments gateway made (its id), once per key; returns (the refund, True if this
        call wrote it). `rma_id` is None for a refund of a parcel that never arrived.
        Locking: the refund key's advisory lock, then the refund row."""
        if amount_cents < 0:
            raise ValueError(f"refund amount must be >= 0, got {amount_cents}")
        created = False

        async def op(conn: AsyncConnection) -> None:
            nonlocal created
            await lock_key(conn, key)
            exists = (await conn.execute(select(t.refunds.c.key).where(t.refunds.c.key == key))).first()
            if exists is None:
                await conn.execute(
                    t.refunds.insert().values(
                        key=key,
                        refund_id=refund_id,
                        rma_id=rma_id or "",
                        order_id=order_id,
                        amount_cents=amount_cents,
                        currency=currency,
                        status="refunded",
                        created_at=utc_now(),
                    )
                )
                created = True

        await self._db.write(op, f"refund {key}")
        refund = await self.get_refund(key)
        assert refund is not None
        return refund, created

    async def get_refund(self, key: str) -> RefundRecord | None:
        async with self._db.connect() as conn:
            row = (await conn.execute(select(t.refunds).where(t.refunds.c.key == key))).first()
        return _refund(row) if row is not None else None

    async def refunds(self, order_id: str | None = None) -> list[RefundRecord]:
        stmt = select(t.refunds).order_by(t.refunds.c.created_at)
        if order_id is not None:
            stmt = stmt.where(t.refunds.c.order_id == order_id)
        async with self._db.connect() as conn:
            return [_refund(r) for r in (await conn.execute(stmt)).all()]
