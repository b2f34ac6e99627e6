"""Carrier side effects: buy (and void) labels, follow tracking.

Label purchase is idempotent by the business key `label:<order_id>:<n>`: the carrier shipment id is
recorded before buying, and the carrier refuses to buy the same shipment twice, so a retry or a crashed
worker finds the label it already paid for instead of buying another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from common.catalog.contracts import Warehouse
from common.integrations.carrier_api import (
    Carrier,
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierError,
    CarrierNotFoundError,
    CarrierShipment,
    CarrierTransientError,
)
from common.inventory.contracts import ParcelRef
from common.logs import customer_data, redact
from common.models import (
    MOVED_TRACKING_STATUSES,
    Label,
    LabelRequest,
    TrackingPollRequest,
    TrackingStatus,
    TrackingUpdate,
)
from common.shipping.contracts import LabelRecord, LabelUndo, LabelUndoResult
from common.shipping.rate_shopping import RateStrategy, choose
from common.store import Store

CATALOGUE_TTL_S = 60.0


def label_key(order_id: str, shipment_no: int) -> str:
    return f"label:{order_id}:{shipment_no}"


class ShippingActivities:
    def __init__(
        self,
        store: Store,
        carrier: Carrier,
        *,
        rate_strategy: RateStrategy = "cheapest",
        preferred_carriers: Sequence[str] = (),
    ) -> None:
        self._store = store
        self._carrier = carrier
        self._rate_strategy: RateStrategy = rate_strategy
        self._preferred = tuple(preferred_carriers)
        self._catalogue_cache: tuple[float, dict[str, Warehouse], dict[str, int]] | None = None

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of this domain, bound to their clients: what a worker registers."""
        return [
            self.buy_label,
            self.void_label,
            self.void_label_if_unshipped,
            self.check_tracking,
            self.await_tracking_change,
        ]

    @activity.defn(name="buy_label")
    async def buy_label(self, request: LabelRequest) -> Label:
        key = label_key(request.order_id, request.shipment_no)
        try:
            record = await self._store.labels.get(key)
            if record is not None and record.status == "purchased":
                return _label(record)
            shipment: CarrierShipment | None = None
            if record is None:
                created = await self._carrier.create_shipment(
                    reference=key,
                    to_address=request.ship_to,
                    from_address=await self._from_address(request.warehouse),
                    parcel=await self._parcel(request),
                )
                # If a concurrent attempt recorded first, its shipment wins and ours is never bought.
                record = await self._store.labels.record_carrier_shipment(key, request.order_id, created.id)
                if record.carrier_shipment_id == created.id:
                    shipment = created  # ours, just created with its rates: no need to fetch it again
            if shipment is None:  # a retry, or another attempt's shipment: it may have been bought meanwhile
                shipment = await self._carrier.get_shipment(record.carrier_shipment_id)
            choice = ""
            if shipment.tracking_code is None:
                today = datetime.now(UTC).date()
                promised = request.promised_delivery or today + timedelta(days=request.speed.max_delivery_days)
                rate = choose(
                    shipment.rates,
                    promised=promised,
                    label_day=today,
                    strategy=self._rate_strategy,
                    preferred=self._preferred,
                )
                choice = rate.note
                try:
                    shipment = await self._carrier.buy(shipment.id, rate.rate.id)
                except CarrierAlreadyPurchasedError:
                    shipment = await self._carrier.get_shipment(shipment.id)
            record = await self._record_label(key, shipment)
            return _label(record).model_copy(update={"choice": choice})
        except CarrierAddressError as err:
            # Any carrier adapter's words without the address they quote (the field is named); chained only when
            # nothing was masked, as a cause is logged and recorded with its own text
            problem = redact(str(err), *customer_data(request.ship_to))
            cause = err if problem == str(err) else None
            raise ApplicationError(problem, type="CarrierAddressError", non_retryable=True) from cause
        except CarrierTransientError:
            raise  # retried by the activity's retry policy
        except CarrierError as err:
            problem = redact(str(err), *customer_data(request.ship_to))
            rejected = err if problem == str(err) else None
            raise ApplicationError(problem, type="CarrierRejected", non_retryable=True) from rejected

    @activity.defn(name="void_label")
    async def void_label(self, request: LabelRequest) -> bool:
        """Compensation for buy_label of orders recorded before void_label_if_unshipped: True if the label is
        voided now (see undo_label)."""
        undo = await self._undo(label_key(request.order_id, request.shipment_no))
        return undo.outcome == LabelUndo.VOIDED

    @activity.defn(name="void_label_if_unshipped")
    async def void_label_if_unshipped(self, ref: ParcelRef) -> LabelUndoResult:
        """Undo the parcel's label unless the carrier has the parcel (see undo_label). Idempotent."""
        return await self._undo(label_key(ref.order_id, ref.shipment_no))

    @activity.defn(name="check_tracking")
    async def check_tracking(self, request: TrackingPollRequest) -> TrackingUpdate:
        """Where the parcel is now, in one call (no waiting for a change): asked before a cancel or hold is
        allowed to undo or stop a labelled parcel."""
        tracker = await self._carrier.get_tracker(request.tracking_number)
        return TrackingUpdate(
            status=tracker.status,
            estimated_delivery=tracker.est_delivery_date,
            message=tracker.message or f"carrier reports {tracker.status.value}",
        )

    async def _undo(self, key: str) -> LabelUndoResult:
        try:
            return await undo_label(self._store, self._carrier, key)
        except CarrierTransientError:
            raise
        except CarrierError as err:
            raise ApplicationError(str(err), type="CarrierRejected", non_retryable=True) from err

    @activity.defn(name="await_tracking_change")
    async def await_tracking_change(self, request: TrackingPollRequest) -> TrackingUpdate:
        """Returns when the carrier reports a status other than `last_status`; raises (and so is retried at
        the poll interval, without touching history) while nothing changed."""
        tracker = await self._carrier.get_tracker(request.tracking_number)
        status = tracker.status
        estimate_moved = tracker.est_delivery_date is not None and tracker.est_delivery_date != request.last_estimate
        unchanged = status in (request.last_status, TrackingStatus.UNKNOWN, TrackingStatus.PRE_TRANSIT)
        if unchanged and not (estimate_moved and request.last_estimate is not None):
            # BENIGN: an unchanged parcel is the normal case of this poll loop, not an error to log or count.
            raise ApplicationError(
                f"tracking {request.tracking_number} still {status.value}",
                type="TrackingUnchanged",
                category=ApplicationErrorCategory.BENIGN,
            )
        return TrackingUpdate(
            status=status,
            estimated_delivery=tracker.est_delivery_date,
            message=tracker.message or f"carrier reports {status.value}",
        )

    async def _record_label(self, key: str, shipment: CarrierShipment) -> LabelRecord:
        if shipment.selected_rate is None or shipment.tracking_code is None or shipment.label_url is None:
            raise ApplicationError(f"carrier returned shipment {shipment.id} without a label")
        return await self._store.labels.mark_purchased(
            key,
            carrier=shipment.selected_rate.carrier,
            service=shipment.selected_rate.service,
            rate_cents=shipment.selected_rate.rate_cents,
            tracking_number=shipment.tracking_code,
            label_url=shipment.label_url,
            tracking_url=shipment.tracking_url or "",
        )

    async def _from_address(self, warehouse_code: str) -> dict[str, str]:
        warehouses, _ = await self._catalogue(warehouse=warehouse_code)
        return warehouse_address(warehouses.get(warehouse_code), warehouse_code)

    async def _parcel(self, request: LabelRequest) -> dict[str, float]:
        _, weights = await self._catalogue(skus=[line.sku for line in request.lines])
        return parcel_of(request.lines, weights)

    async def _catalogue(
        self, *, warehouse: str | None = None, skus: Sequence[str] = ()
    ) -> tuple[dict[str, Warehouse], dict[str, int]]:
        """Warehouses and product weights, read at most once a minute: every label needs them, they rarely change.
        Read again at once when the `warehouse` or `skus` a label needs are not in it: added since."""
        cache = self._catalogue_cache
        if (
            cache is None
            or time.monotonic() - cache[0] > CATALOGUE_TTL_S
            or (warehouse is not None and warehouse not in cache[1])
            or any(sku not in cache[2] for sku in skus)
        ):
            warehouses = {wh.code: wh for wh in await self._store.catalog.warehouses()}
            weights = {p.sku: p.weight_grams for p in await self._store.catalog.products()}
            cache = self._catalogue_cache = (time.monotonic(), warehouses, weights)
        return cache[1], cache[2]


def _label(record: LabelRecord) -> Label:
    return Label(
        shipment_key=record.key,
        carrier=record.carrier or "",
        service=record.service or "",
        rate_cents=record.rate_cents or 0,
        tracking_number=record.tracking_number or "",
        label_url=record.label_url or "",
        tracking_url=record.tracking_url or "",
        carrier_shipment_id=record.carrier_shipment_id,
    )


async def undo_label(store: Store, carrier: Carrier, key: str) -> LabelUndoResult:
    """Undo the label bought under `key`, asking the carrier what happened first: a label is voided only when
    the carrier accepted its refund, never once the carrier has the parcel. A shipment that was created but
    not (yet) known to be bought in our records is looked up too: a purchase interrupted after the carrier
    sold the label is found and refunded. The record is marked voided only when nothing is left to pay for.
    Idempotent."""
    record = await store.labels.get(key)
    if record is None:
        return LabelUndoResult(outcome=LabelUndo.NOTHING_BOUGHT, note="no carrier shipment was created")
    if record.status == "voided":
        return LabelUndoResult(outcome=LabelUndo.VOIDED, note="voided before")
    shipment = await carrier.get_shipment(record.carrier_shipment_id)
    if shipment.tracking_code is None:
        await store.labels.mark_voided(key)  # never bought: nothing to refund, and nothing may be bought now
        return LabelUndoResult(outcome=LabelUndo.NOTHING_BOUGHT, note="the carrier shipment has no label")
    if shipment.refund_status in ("submitted", "refunded"):
        await store.labels.mark_voided(key)
        return LabelUndoResult(outcome=LabelUndo.VOIDED, refund_status=shipment.refund_status, note="refunded before")
    try:
        status = (await carrier.get_tracker(shipment.tracking_code)).status
    except CarrierNotFoundError:
        status = TrackingStatus.UNKNOWN
    if status in MOVED_TRACKING_STATUSES:
        return LabelUndoResult(
            outcome=LabelUndo.IN_USE, tracking_status=status, note=f"the carrier has the parcel ({status.value})"
        )
    refunded = await carrier.refund(shipment.id)
    if refunded.refund_status in ("submitted", "refunded"):
        await store.labels.mark_voided(key)
        return LabelUndoResult(
            outcome=LabelUndo.VOIDED, tracking_status=status, refund_status=refunded.refund_status, note="refunded"
        )
    return LabelUndoResult(
        outcome=LabelUndo.IN_USE,
        tracking_status=status,
        refund_status=refunded.refund_status,
        note=f"the carrier refused the refund ({refunded.refund_status})",
    )


def warehouse_address(wh: Warehouse | None, code: str) -> dict[str, str]:
    """A warehouse as the carrier's address (the sender of a label, or the recipient of a return)."""
    if wh is None:
        raise ApplicationError(f"unknown warehouse {code}", non_retryable=True)
    return {"name": wh.name, "street1": wh.name, "city": wh.region or wh.name, "zip": "00000", "country": wh.country}


class _Line(Protocol):
    @property
    def sku(self) -> str: ...
    @property
    def quantity(self) -> int: ...


def parcel_of(lines: Sequence[_Line], weights: Mapping[str, int]) -> dict[str, float]:
    """The parcel for these lines: catalogue weights (500 g when unknown), in ounces as EasyPost wants."""
    grams = sum(weights.get(line.sku, 500) * line.quantity for line in lines)
    return {"weight": round(grams / 28.35, 1)}
