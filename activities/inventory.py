"""Stock side effects: reserve, release, commit, split-shipment reservations and low-stock alerts. Each is
idempotent in the database (reservations by order id, or (order id, shipment no); alerts by crossing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from common.config import Settings, get_settings
from common.integrations.email import EmailSender
from common.inventory.alerts import send_low_stock_alerts
from common.inventory.contracts import ParcelRef
from common.models import OrderLine, ParcelAllocation, ReserveRequest, ReserveResult
from common.store import Store


class InventoryActivities:
    def __init__(self, store: Store, email: EmailSender | None = None, settings: Settings | None = None) -> None:
        self._store = store
        self._settings = settings or get_settings()
        self._email = email or EmailSender(self._settings)

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of this domain, bound to their clients: what a worker registers."""
        return [
            self.reserve_stock,
            self.release_stock,
            self.commit_shipment,
            self.close_backorder,
            self.release_shipment,
            self.alert_low_stock,
        ]

    @activity.defn(name="reserve_stock")
    async def reserve_stock(self, request: ReserveRequest) -> ReserveResult:
        """Reserve the lines as one shipment from one warehouse (ship-to region, then country, preferred), or
        split over the fewest warehouses; with `allow_partial`, what is in stock now. Idempotent per
        (order, first shipment no)."""
        allocation = await self._store.reservations.allocate(
            request.order_id,
            [(line.sku, line.quantity) for line in request.lines],
            prefer_country=request.ship_to_country,
            prefer_region=request.ship_to_region,
            allow_partial=request.allow_partial,
            first_shipment=request.first_shipment,
            exclude=request.exclude_warehouses,
        )
        providers = await self._store.catalog.warehouse_providers() if allocation.shipments else {}
        shipments = [
            ParcelAllocation(
                shipment_no=n,
                warehouse=warehouse,
                lines=[OrderLine(sku=sku, quantity=qty) for sku, qty in lines],
                provider=providers.get(warehouse),
            )
            for n, warehouse, lines in allocation.shipments
        ]
        return ReserveResult(
            reserved=bool(shipments) and not allocation.short,
            warehouse=shipments[0].warehouse if shipments else None,
            short=allocation.short,
            shipments=shipments,
            low_stock=allocation.low_stock,
        )

    @activity.defn(name="release_stock")
    async def release_stock(self, order_id: str) -> int:
        return await self._store.reservations.release(order_id)

    @activity.defn(name="release_shipment")
    async def release_shipment(self, ref: ParcelRef) -> int:
        """Undo of one parcel's reservation (the rest of the order keeps its own). Idempotent."""
        return await self._store.reservations.release(ref.order_id, shipment_no=ref.shipment_no, note="cancel shipment")

    @activity.defn(name="close_backorder")
    async def close_backorder(self, order_id: str) -> bool:
        """The order stops waiting for stock (the rest of it was given up); its reservations stay as they are."""
        return await self._store.backorders.close_backorder(order_id)

    @activity.defn(name="commit_shipment")
    async def commit_shipment(self, ref: ParcelRef) -> int:
        return await self._store.reservations.commit_reservation(ref.order_id, shipment_no=ref.shipment_no)

    @activity.defn(name="alert_low_stock")
    async def alert_low_stock(self, skus: list[str]) -> int:
        """Email ops once per crossing of the reorder point (of these SKUs; all when empty) not alerted yet.
        Returns how many emails went out now. Idempotent: key lowstock:<sku>:<warehouse>:<crossing id>."""
        try:
            sent = await send_low_stock_alerts(self._store, self._email, self._settings.ops_email, skus or None)
        except Exception as err:
            raise ApplicationError(f"low-stock alert failed: {err}") from err
        for crossing in sent:
            activity.logger.info(
                "low-stock alert sent: %s at %s, %d available (reorder point %d)",
                crossing.sku,
                crossing.warehouse,
                crossing.available,
                crossing.reorder_point,
            )
        return len(sent)
