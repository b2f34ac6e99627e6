"""Side effects of a return (RMA): record it, buy the return label, inspect what came back, refund.

Every one is idempotent by a business key: the RMA id for the DB rows, `return-label:<rma>` for the carrier
(the carrier shipment id is recorded before buying, as for outbound labels), `(RMA, sku, warehouse)` for the
restock and write-off ledger rows, `refund:<rma>` for the payments gateway.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.shipping import parcel_of, undo_label, warehouse_address
from common import metrics
from common.integrations.carrier_api import (
    Carrier,
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierError,
    CarrierTransientError,
)
from common.integrations.payments import PaymentDeclined, PaymentError, PaymentsGateway
from common.logs import customer_data, redact
from common.models import ParcelRefundRequest, PaymentRefund
from common.order_signals import wake_backordered_orders
from common.returns import (
    Condition,
    InspectRequest,
    InspectResult,
    RecordRmaRequest,
    RefundRequest,
    RefundResult,
    ReturnLabel,
    ReturnLabelRequest,
    RmaStatusChange,
    refund_key,
    refundable_units,
    return_label_key,
)
from common.shipping.contracts import LabelRecord, LabelUndo
from common.shipping.rate_shopping import choose
from common.store import Store

# Returns go back the cheapest way: no customer is waiting on the parcel.
RETURN_MAX_DELIVERY_DAYS = 7


class ReturnActivities:
    def __init__(self, store: Store, carrier: Carrier, payments: PaymentsGateway) -> None:
        self._store = store
        self._returns = store.returns
        self._carrier = carrier
        self._payments = payments

    def activities(self) -> list[Callable[..., Any]]:
        """The activities of this domain, bound to their clients: what a worker registers."""
        return [
            self.record_rma,
            self.set_rma_status,
            self.buy_return_label,
            self.void_return_label,
            self.inspect_return,
            self.refund_return,
            self.refund_shipment,
        ]

    @activity.defn(name="record_rma")
    async def record_rma(self, request: RecordRmaRequest) -> str:
        rma = await self._returns.record_rma(
            request.rma_id,
            request.order_id,
            reason=request.reason.value,
            lines=[(li.sku, li.quantity) for li in request.lines],
            exchange=request.exchange,
            replacement_order_id=request.replacement_order_id,
            note=request.note or "",
        )
        return rma.status

    @activity.defn(name="set_rma_status")
    async def set_rma_status(self, change: RmaStatusChange) -> None:
        await self._returns.set_status(
            change.rma_id,
            change.status.value,
            note=change.note or None,
            carrier=change.carrier,
            tracking_number=change.tracking_number,
            label_url=change.label_url,
        )

    @activity.defn(name="buy_return_label")
    async def buy_return_label(self, request: ReturnLabelRequest) -> ReturnLabel:
        """A return label (EasyPost `is_return: true`: the label runs from the customer back to the warehouse)."""
        key = return_label_key(request.rma_id)
        try:
            record = await self._store.labels.get(key)
            if record is None or record.status != "purchased":
                if record is None:
                    created = await self._carrier.create_shipment(
                        reference=key,
                        to_address=request.customer_address,
                        from_address=await self._warehouse_address(request.warehouse),
                        parcel=await self._parcel(request),
                        is_return=True,
                    )
                    record = await self._store.labels.record_carrier_shipment(key, request.order_id, created.id)
                shipment = await self._carrier.get_shipment(record.carrier_shipment_id)
                if shipment.tracking_code is None:
                    today = datetime.now(UTC).date()
                    promised = today + timedelta(days=RETURN_MAX_DELIVERY_DAYS)
                    rate = choose(shipment.rates, promised=promised, label_day=today).rate
                    try:
                        shipment = await self._carrier.buy(shipment.id, rate.id)
                    except CarrierAlreadyPurchasedError:
                        shipment = await self._carrier.get_shipment(shipment.id)
                if shipment.selected_rate is None or shipment.tracking_code is None or shipment.label_url is None:
                    raise ApplicationError(f"carrier returned shipment {shipment.id} without a label")
                record = await self._store.labels.mark_purchased(
                    key,
                    carrier=shipment.selected_rate.carrier,
                    service=shipment.selected_rate.service,
                    rate_cents=shipment.selected_rate.rate_cents,
                    tracking_number=shipment.tracking_code,
                    label_url=shipment.label_url,
                    tracking_url=shipment.tracking_url or "",
                )
            return _label(record)
        except CarrierAddressError as err:
            # The customer's address is the return's sender: kept out of the message as in buy_label
            problem = redact(str(err), *customer_data(request.customer_address))
            cause = err if problem == str(err) else None
            raise ApplicationError(problem, type="CarrierAddressError", non_retryable=True) from cause
        except CarrierTransientError:
            raise
        except CarrierError as err:
            problem = redact(str(err), *customer_data(request.customer_address))
            rejected = err if problem == str(err) else None
            raise ApplicationError(problem, type="CarrierRejected", non_retryable=True) from rejected

    @activity.defn(name="void_return_label")
    async def void_return_label(self, rma_id: str) -> bool:
        """An expired RMA's unused label is refunded by the carrier, unless the parcel moved after all (see
        undo_label). True if it is voided now. Idempotent."""
        undo = await undo_label(self._store, self._carrier, return_label_key(rma_id))
        return undo.outcome == LabelUndo.VOIDED

    @activity.defn(name="inspect_return")
    async def inspect_return(self, request: InspectRequest) -> InspectResult:
        """Resellable units back on hand (a "return" ledger row, idempotent by RMA), damaged ones written off
        (a "writeoff" row with zero on-hand delta); then wake orders backordered on the restocked SKUs."""
        resellable: dict[str, int] = {}
        damaged: dict[str, int] = {}
        for line in request.lines:
            target = resellable if line.condition == Condition.RESELLABLE else damaged
            target[line.sku] = target.get(line.sku, 0) + line.quantity
        reason = "damaged on return" + (f" ({request.note})" if request.note else "")
        await self._returns.record_inspection(
            request.rma_id, resellable=resellable, damaged=damaged, warehouses=request.warehouses, reason=reason
        )
        for sku, qty in sorted(resellable.items()):
            await self._store.stock.return_stock(
                sku, qty, request.warehouses.get(sku), ref=request.rma_id, note=f"customer return {request.rma_id}"
            )
        woken: list[str] = []
        if resellable:
            woken = await wake_backordered_orders(activity.client(), self._store, sorted(resellable))
        return InspectResult(restocked=resellable, written_off=damaged, woken_orders=woken)

    @activity.defn(name="refund_return")
    async def refund_return(self, request: RefundRequest) -> RefundResult:
        """Pay back what the warehouse accepted of an RMA (refundable_units), at the prices paid. Once per RMA."""
        refund = await self._pay_back(
            refund_key(request.rma_id),
            order_id=request.order_id,
            rma_id=request.rma_id,
            units=refundable_units(request.reason, request.lines),
            unit_prices=request.unit_prices,
            payment_reference=request.payment_reference,
            currency=request.currency,
            reason=f"return {request.rma_id} ({request.reason.value})",
        )
        return RefundResult(
            refund_id=refund.refund_id,
            amount_cents=refund.amount_cents,
            currency=refund.currency,
            already_refunded=refund.already_refunded,
        )

    @activity.defn(name="refund_shipment")
    async def refund_shipment(self, request: ParcelRefundRequest) -> PaymentRefund:
        """Pay back one parcel ops decided to refund (a delivery exception), at the prices paid. Once per parcel."""
        units: dict[str, int] = {}
        for line in request.lines:
            units[line.sku] = units.get(line.sku, 0) + line.quantity
        return await self._pay_back(
            f"refund:{request.key or request.order_id}:shipment-{request.shipment_no}",
            order_id=request.order_id,
            rma_id=None,
            units=units,
            unit_prices=request.unit_prices,
            payment_reference=request.payment_reference,
            currency=request.currency,
            reason=f"shipment {request.shipment_no} not delivered",
        )

    async def _pay_back(
        self,
        key: str,
        *,
        order_id: str,
        rma_id: str | None,
        units: dict[str, int],
        unit_prices: dict[str, int],
        payment_reference: str | None,
        currency: str,
        reason: str,
    ) -> PaymentRefund:
        """The one way money goes back: the amount at the prices paid (today's catalogue price for orders placed
        before prices were kept), through the payments gateway with `key` as its idempotency key, recorded in
        the refunds ledger. A refund recorded before is returned as it is."""
        done = await self._returns.get_refund(key)
        if done is not None:
            return PaymentRefund(
                refund_id=done.refund_id, amount_cents=done.amount_cents, currency=done.currency, already_refunded=True
            )
        prices = dict(unit_prices)
        unpriced = sorted(set(units) - set(prices))
        if unpriced:
            prices.update(await self._store.catalog.prices(unpriced))
        missing = sorted(set(units) - set(prices))
        if missing:
            raise ApplicationError(f"no price for {', '.join(missing)}", type="PaymentDeclined", non_retryable=True)
        amount = sum(prices[sku] * qty for sku, qty in units.items())
        if amount == 0:  # nothing is owed (e.g. every unit came back damaged by the customer): nothing moves
            return PaymentRefund(refund_id="", amount_cents=0, currency=currency)
        try:
            receipt = await self._payments.refund(
                key=key,
                order_id=order_id,
                payment_reference=payment_reference,
                amount_cents=amount,
                currency=currency,
                reason=reason,
            )
        except PaymentDeclined as err:
            raise ApplicationError(str(err), type="PaymentDeclined", non_retryable=True) from err
        except PaymentError as err:
            raise ApplicationError(str(err), type="PaymentUnavailable") from err
        await self._returns.record_refund(
            key,
            refund_id=receipt.refund_id,
            rma_id=rma_id,
            order_id=order_id,
            amount_cents=receipt.amount_cents,
            currency=receipt.currency,
        )
        metrics.count_in_activity(metrics.REFUNDS)  # after the ledger row: a retry finds it and counts nothing
        return PaymentRefund(
            refund_id=receipt.refund_id,
            amount_cents=receipt.amount_cents,
            currency=receipt.currency,
            already_refunded=receipt.already_refunded,
        )

    async def _warehouse_address(self, code: str) -> dict[str, str]:
        return warehouse_address(
            next((w for w in await self._store.catalog.warehouses() if w.code == code), None), code
        )

    async def _parcel(self, request: ReturnLabelRequest) -> dict[str, float]:
        return parcel_of(request.lines, {p.sku: p.weight_grams for p in await self._store.catalog.products()})


def _label(record: LabelRecord) -> ReturnLabel:
    return ReturnLabel(
        shipment_key=record.key,
        carrier=record.carrier or "",
        service=record.service or "",
        tracking_number=record.tracking_number or "",
        label_url=record.label_url or "",
        tracking_url=record.tracking_url or "",
    )
