"""The engine's Python API for programs (the `fulfill` CLI is a thin layer over it), e.g.
`async with await FulfillmentApi.connect(get_settings()) as api: await api.place_order(json_text)`."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from common.api._helpers import (
    already_placed,
    failed_view,
    innermost_message,
    next_placement,
    order_digest,
    order_summary,
    orders_query,
    promise_for,
    request_model,
    with_prices,
)
from common.api.carrier_events import CarrierEventReceipt, receive_carrier_event
from common.api.customers import CustomerDesk
from common.api.kpi import KpiDesk
from common.api.results import OrderPage, OrderSummary, PlacedOrder, StockUpdate
from common.api.sms import InboundSmsResult, StatusCallbackResult, receive_sms, record_sms_status
from common.api.threepl import ThreePLDesk
from common.config import Settings
from common.crypto.codec import CustomerDataErased
from common.errors import (
    Erased,
    FulfillmentError,
    InvalidOrder,
    InvalidRequest,
    OrderAlreadyExists,
    OrderNotFound,
    PickNotAllowed,
    PickTaskNotFound,
    RequestRefused,
    RmaNotFound,
    StillUnderWay,
)
from common.intake import describe_error, parse_order
from common.inventory.alerts import alert_ops_now
from common.inventory.contracts import LedgerEntry, StockChange, StockLevel
from common.inventory.planning import StockForecast, stock_forecasts
from common.logs import describe_error as describe_exception
from common.models import (
    ORDER_WORKFLOW_VERSION,
    Address,
    AddressChange,
    CancelRequest,
    HoldRequest,
    Order,
    OrderPolicy,
    OrderStatus,
    OrderView,
    OrderWorkflowInput,
    ReleaseRequest,
    ResolveDeliveryRequest,
    RetryRequest,
    workflow_id_for,
)
from common.notifications.delivery import NotificationView, notification_view
from common.order_signals import DeliveryReport, deliver_order_signals, wake_backordered_orders
from common.orders.intake_keys import IdempotencyKeyReused
from common.privacy import connect
from common.returns import ReceiveReturnRequest, RetryRefundRequest, ReturnRequest, RmaView, return_workflow_id
from common.store import Store
from common.temporal import (
    CUSTOMER_ID,
    ORDER_STATUS,
    PICK_OVERDUE,
    SKUS,
    UpdateStillRunning,
    execute_update,
)
from common.warehouse.contracts import PickTask, PickTaskClosed, ShipmentReleased
from common.warehouse.short_picks import shortage_problem
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow

log = logging.getLogger("fulfill.api")

__all__ = ["FulfillmentApi", "OrderPage", "OrderSummary", "PlacedOrder", "StockUpdate", "with_prices"]


class FulfillmentApi(ThreePLDesk, CustomerDesk, KpiDesk):  # 3PL: api/threepl.py; erasure: customers.py; KPIs: kpi.py
    def __init__(self, client: Client, store: Store, settings: Settings, *, update_wait: float | None = None) -> None:
        self.client = client
        self.store = store
        self.settings = settings
        # How long an ops action waits for the order to carry it out before StillUnderWay; None: until it has.
        self.update_wait = update_wait

    @classmethod
    async def connect(
        cls,
        settings: Settings,
        *,
        store: Store | None = None,
        client: Client | None = None,
        update_wait: float | None = None,
    ) -> Self:
        store = store or await Store.open(settings.database_url)
        client = client or await connect(settings)
        return cls(client, store, settings, update_wait=update_wait)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    # ------------------------------------------------------------------------------------------ orders

    def policy(self) -> OrderPolicy:
        s = self.settings
        return OrderPolicy(
            tracking_poll_interval_s=s.tracking_poll_interval,
            # Pushed tracking (a webhook secret to check it with): polling is only the safety net
            tracking_safety_poll_interval_s=s.tracking_safety_poll_interval if s.carrier_webhook_secret else None,
            tracking_timeout_s=s.tracking_timeout,
            backorder_recheck_interval_s=s.backorder_recheck_interval,
            backorder_max_wait_s=s.backorder_max_wait,
            pick_escalate_after_s=s.pick_escalate_after,
            pick_customer_delay_after_s=s.pick_customer_delay_after,
            delivery_delay_grace_s=s.delivery_delay_grace,
            delivery_exception_timeout_s=s.delivery_exception_timeout,
            partial_shipment=s.partial_shipment,
            return_window_s=s.return_window,
            return_transit_timeout_s=s.return_transit_timeout,
            address_fix_timeout_s=s.address_fix_timeout,
            failed_wait_s=s.failed_wait,
            return_receive_timeout_s=s.return_receive_timeout,
            threepl_accept_sla_s=s.threepl_accept_sla,
            threepl_ship_sla_s=s.threepl_ship_sla,
            threepl_poll_interval_s=s.threepl_poll_interval,
        )

    async def place_order(
        self, data: str | bytes | dict[str, Any] | Order, *, idempotency_key: str | None = None, client: str = ""
    ) -> PlacedOrder:
        """Start the order's workflow. The same order placed again (same content: a retry) starts nothing and
        answers with its run (`created` False); other content under a placed order id is OrderAlreadyExists. An
        order whose last run ended unfulfilled (FAILED, terminated) is placed again, unless `idempotency_key`
        (with the `client` it belongs to) says this is a retry of a placement already answered."""
        order = parse_order(data)
        digest = order_digest(order)
        prices = await self.store.catalog.prices([line.sku for line in order.lines])
        unknown = [line.sku for line in order.lines if line.sku not in prices]
        if unknown:
            raise InvalidOrder([f"lines: unknown sku {sku!r} (not in the catalogue)" for sku in unknown])
        # Only a valid order binds a key (a client fixes a refused body and retries under the same key)
        promise = promise_for(order, datetime.now(UTC))  # InvalidOrder for a date already past
        retry_of_key = await self._claim(idempotency_key, client, digest, order.order_id)
        order = with_prices(order, prices).model_copy(update={"promised_delivery": promise})
        placement = 1
        while True:
            try:
                handle = await self._start(order, placement=placement, digest=digest, placed_by=client)
                return PlacedOrder(order.order_id, handle.id, handle.result_run_id or "")
            except WorkflowAlreadyStartedError:
                last_run = await self._last_run(order.order_id)
                # Placed again once at most: losing that race to another placement ends here too
                again = None if retry_of_key or placement > 1 else await next_placement(last_run)
                if again is not None:
                    placement = again
                    continue
                if last_run is not None and await last_run.memo_value("digest", default=None) == digest:
                    return PlacedOrder(order.order_id, last_run.id, last_run.run_id or "", created=False)
                raise OrderAlreadyExists(already_placed(order.order_id, last_run)) from None

    async def _claim(self, idempotency_key: str | None, client: str, digest: str, order_id: str) -> bool:
        """Bind the key to this body; True if the key came before with it (a retry)."""
        if idempotency_key is None:
            return False
        try:
            return not await self.store.intake_keys.claim(client, idempotency_key, digest, order_id)
        except IdempotencyKeyReused as err:
            raise OrderAlreadyExists(str(err)) from None

    async def _start(
        self, order: Order, *, placement: int, digest: str, placed_by: str
    ) -> WorkflowHandle[Any, OrderView]:
        return await self.client.start_workflow(
            OrderWorkflow.run,
            OrderWorkflowInput(
                order=order, policy=self.policy(), workflow_version=ORDER_WORKFLOW_VERSION, placement=placement
            ),
            id=order.workflow_id,
            task_queue=self.settings.task_queue,
            # An order id is placed once: a second placement starts nothing, unless the order ended for good
            # without being fulfilled (FAILED, or terminated): then it may be placed again (next_placement).
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE
            if placement == 1
            else WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(ORDER_STATUS, OrderStatus.RECEIVED.value),
                    SearchAttributePair(CUSTOMER_ID, order.customer.id),
                    SearchAttributePair(SKUS, [line.sku for line in order.lines]),
                    SearchAttributePair(PICK_OVERDUE, False),  # so that `PickOverdue=false` lists it
                ]
            ),
            # placed_by: the client (an API key's name) that placed it, who alone may read it with an intake key
            memo={"placement": placement, "digest": digest, "placed_by": placed_by},
            static_summary=f"Order {order.order_id}: {sum(li.quantity for li in order.lines)} units, "
            f"{order.shipping_speed.value} to {order.ship_to.country}",
        )

    async def _last_run(self, order_id: str) -> WorkflowExecutionDescription | None:
        """The order's last run, None if there is none; any other error of Temporal's is raised (nothing was
        started, so placing it again later is safe)."""
        try:
            return await self._handle(order_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    def _handle(self, order_id: str) -> WorkflowHandle[Any, OrderView]:
        return self.client.get_workflow_handle(workflow_id_for(order_id), result_type=OrderView)

    async def order_status(self, order_id: str, *, placed_by: str | None = None) -> OrderView:
        """The order's view. With `placed_by`, only an order that client placed: any other is OrderNotFound (a
        storefront sees its own orders, not another's)."""
        handle = self._handle(order_id)
        try:
            description = await handle.describe()
            if placed_by is not None and await description.memo_value("placed_by", default=None) != placed_by:
                raise OrderNotFound(f"no order {order_id!r}")
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()  # the final view, readable without a worker
            if description.status == WorkflowExecutionStatus.FAILED:
                final = await failed_view(handle)
                if final is not None:
                    return final
            return await handle.query(OrderWorkflow.status, rpc_timeout=timedelta(seconds=10))
        except CustomerDataErased as err:
            raise Erased(f"order {order_id}: {err}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(f"no order {order_id!r}") from None
            raise

    async def list_orders(self, status: OrderStatus | None = None, limit: int = 200) -> list[OrderSummary]:
        query = orders_query(status, None, None)
        return [order_summary(wf) async for wf in self.client.list_workflows(query, limit=limit)]

    async def orders_page(
        self,
        *,
        status: OrderStatus | None = None,
        customer_id: str | None = None,
        sku: str | None = None,
        page_size: int = 50,
        cursor: str | None = None,
    ) -> OrderPage:
        """One page of orders, newest first, from Temporal visibility (eventually consistent: an order placed a
        moment ago may show a moment later)."""
        try:
            token = (
                base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True) if cursor else None
            )
        except (binascii.Error, ValueError):
            token = b""
        if token == b"":
            raise InvalidRequest("cursor: not a cursor this API gave out")
        listing = self.client.list_workflows(
            orders_query(status, customer_id, sku), page_size=page_size, next_page_token=token
        )
        try:
            await listing.fetch_next_page()
        except RPCError as err:
            unavailable = err.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
            if token is not None and not unavailable:  # what else the server says of a token it cannot read
                raise InvalidRequest("cursor: not a cursor this API gave out, or it expired") from None
            raise
        orders = [order_summary(wf) for wf in listing.current_page or []]
        following = listing.next_page_token
        return OrderPage(orders, base64.urlsafe_b64encode(following).decode().rstrip("=") if following else None)

    # Every ops action takes `by`: who asks (an API key's name, `cli:<user>`), kept in the order's timeline
    # (the `by` of the Update's request).

    async def cancel_order(self, order_id: str, reason: str, *, by: str | None = None) -> OrderView:
        """Cancel with compensation; returns once the order is CANCELLED. Refused once shipped (the carrier is
        asked)."""
        return await self._update(order_id, OrderWorkflow.cancel, request_model(CancelRequest, reason=reason, by=by))

    async def retry_order(self, order_id: str, note: str | None = None, *, by: str | None = None) -> OrderView:
        """Retry what failed and waits for ops (the order is FAILED); refused if nothing failed."""
        return await self._update(order_id, OrderWorkflow.retry, request_model(RetryRequest, note=note, by=by))

    async def hold_order(self, order_id: str, reason: str, *, by: str | None = None) -> OrderView:
        return await self._update(order_id, OrderWorkflow.hold, request_model(HoldRequest, reason=reason, by=by))

    async def release_order(self, order_id: str, *, by: str | None = None) -> OrderView:
        request = None if by is None else request_model(ReleaseRequest, by=by)
        return await self._update(order_id, OrderWorkflow.release, request)

    async def resolve_delivery_exception(
        self, order_id: str, action: str, note: str | None = None, *, shipment: int | None = None, by: str | None = None
    ) -> OrderView:
        request = request_model(ResolveDeliveryRequest, action=action, note=note, shipment=shipment, by=by)
        return await self._update(order_id, OrderWorkflow.resolve_delivery_exception, request)

    async def update_address(
        self, order_id: str, address: Address | dict[str, Any], *, by: str | None = None
    ) -> OrderView:
        try:
            parsed = Address.model_validate(address)
        except ValidationError as err:
            raise InvalidRequest(
                "invalid address: " + "; ".join(describe_error(e, prefix="ship_to") for e in err.errors())
            ) from None
        change = parsed if by is None else request_model(AddressChange, address=parsed, by=by)
        return await self._update(order_id, OrderWorkflow.update_address, change)

    async def _update(self, order_id: str, update: UpdateMethodMultiParam[..., Any], arg: Any) -> OrderView:
        """Run a validated Update (`OrderWorkflow.cancel`, ...); a refusal (by its validator, or by the carrier it
        asked) comes back as RequestRefused, order unchanged. Returns the order as it stands after it, or, if it is
        not carried out within `update_wait`, raises StillUnderWay (the order goes on with it)."""
        handle = self._handle(order_id)
        try:
            args = [] if arg is None else [arg]
            await execute_update(handle, update, args, within=self.update_wait)
            return await self.order_status(order_id)
        except UpdateStillRunning:
            raise StillUnderWay(order_id) from None
        except WorkflowUpdateFailedError as err:
            raise RequestRefused(f"order {order_id}: {innermost_message(err)}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # Also what the server says for an Update to a closed workflow: tell the two apart.
                raise await self._not_running(order_id) from None
            raise

    async def _not_running(self, order_id: str) -> FulfillmentError:
        try:
            description = await self._handle(order_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return OrderNotFound(f"no order {order_id!r}")
            raise
        # The order's own status (CANCELLED, COMPLETED...), not the workflow's ("completed" for a cancelled order)
        status = description.typed_search_attributes.get(ORDER_STATUS)
        if status is None:
            status = description.status.name.lower() if description.status else "closed"
        return RequestRefused(f"order {order_id} is closed ({status}); nothing can change it now")

    async def _require_order(self, order_id: str, placed_by: str | None) -> None:
        """OrderNotFound unless the order exists (and, with `placed_by`, that client placed it)."""
        try:
            description = await self._handle(order_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(f"no order {order_id!r}") from None
            raise
        if placed_by is not None and await description.memo_value("placed_by", default=None) != placed_by:
            raise OrderNotFound(f"no order {order_id!r}")

    # ------------------------------------------------------------------------------------------ notifications

    async def notifications(
        self, order_id: str | None = None, *, placed_by: str | None = None, limit: int | None = None
    ) -> list[NotificationView]:
        """The delivery log (of one order), oldest first, recipients masked: each message's own status and the
        provider's word on it (delivered, undelivered with its error, bounced, opted-out) and its email fallback.
        With `placed_by`, only the customer's messages of an order that client placed (OrderNotFound otherwise);
        an order without messages is OrderNotFound unless it exists."""
        if order_id is not None and placed_by is not None:
            await self._require_order(order_id, placed_by)
        records = await self.store.notifications.notifications(order_id, limit=limit)
        if order_id is not None and not records and placed_by is None:
            await self._require_order(order_id, None)
        if placed_by is not None:
            records = [r for r in records if r.key.startswith("notify:")]  # not the ops alerts about it
        return [notification_view(r) for r in records]

    async def sms_status_callback(self, params: dict[str, str], *, key: str | None = None) -> StatusCallbackResult:
        """A Twilio status callback's form (its signature checked by the caller): see common/api/sms.py."""
        return await record_sms_status(self.client, self.store, self.settings, params, key=key)

    async def sms_inbound(self, params: dict[str, str]) -> InboundSmsResult:
        """A customer's text, from Twilio's inbound webhook (its signature checked by the caller): STOP, START,
        HELP; returns the TwiML answer."""
        return await receive_sms(self.store, self.settings, params)

    # ------------------------------------------------------------------------------------------ warehouse

    async def open_picks(self) -> list[PickTask]:
        return await self.store.picks.open_tasks()

    async def confirm_pick(self, task_id: str, short: dict[str, int] | None = None) -> PickTask:
        """Confirm a pick; with `short` (sku -> units not found), a short pick: on hand is corrected with a
        recorded discrepancy and the order re-reserves the missing units elsewhere or waits for them.

        The order is told through the order-signal outbox: the database writes the message with the
        confirmation, and it is delivered at once; if the engine cannot take it now, the confirmation stands
        and the worker's relay delivers it later (the message stays pending: `store.signals.order_signals`). A pick
        whose stock a count released, or that was cancelled, is refused (PickNotAllowed)."""
        task = await self.store.picks.get(task_id)
        if task is None:
            raise PickTaskNotFound(f"no pick task {task_id!r}")
        if short:
            problem = shortage_problem(task_id, dict(task.lines), short)
            if problem is not None:
                raise InvalidRequest(problem)
            if task.status == "confirmed" and task.short != short:
                raise PickNotAllowed(f"pick task {task_id} is already confirmed; a shortage can't be added now")
        try:
            task = await self.store.picks.confirm(task_id, short)
        except ShipmentReleased:
            raise PickNotAllowed(
                f"pick task {task_id} (order {task.order_id}, parcel {task.parcel_no}): its stock was released by a "
                "count: do not ship it; put the goods back, the order re-reserves them or waits for stock"
            ) from None
        except PickTaskClosed as err:
            if err.status == "cancelled":
                raise PickNotAllowed(
                    f"pick task {task_id} was cancelled (order {task.order_id}); do not ship it"
                ) from None
            raise PickNotAllowed(f"pick task {task_id} is already confirmed; a shortage can't be added now") from None
        await self._tell_orders([task.order_id])
        return task

    async def _tell_orders(self, order_ids: list[str]) -> DeliveryReport:
        """Deliver the outbox rows of these orders now. The change they report is committed already, so a
        failure here (the engine, or even the database, unreachable) is not the caller's: the rows stay
        pending and the worker's relay delivers them."""
        if not order_ids:
            return DeliveryReport()
        try:
            return await deliver_order_signals(
                self.client, self.store, workflow_ids=[workflow_id_for(o) for o in order_ids]
            )
        except Exception as err:  # e.g. the database went away just after the change: the relay retries
            return DeliveryReport(error=describe_exception(err, limit=300))

    # ------------------------------------------------------------------------------------------ webhooks

    async def carrier_event(self, body: bytes, headers: Mapping[str, str]) -> CarrierEventReceipt:
        """An EasyPost webhook (tracker.updated): verified with the webhook secret, recorded once, and signalled to
        the order whose parcel it tracks (now, or by the relay if the engine is away). WebhookRefused for a
        forged or replayed event: nothing changes."""
        receipt = await receive_carrier_event(self.store, self.settings.carrier_webhook_secret, body, headers)
        if receipt.signal_id is not None:
            try:
                await deliver_order_signals(self.client, self.store, ids=[receipt.signal_id])
            except Exception as err:  # recorded already: the relay delivers it
                log.info("carrier event %s: told to the relay (%s)", receipt.event_id, describe_exception(err))
        return receipt

    # ------------------------------------------------------------------------------------------ stock

    async def stock(self, sku: str | None = None, warehouse: str | None = None) -> list[StockLevel]:
        return await self.store.stock.stock_levels(sku, warehouse)

    async def stock_history(self, sku: str, warehouse: str | None = None, *, limit: int = 50) -> list[LedgerEntry]:
        """The latest `limit` ledger rows of `sku` (at `warehouse`), newest first."""
        return await self.store.stock.stock_history(sku, warehouse, limit=limit)

    async def stock_forecasts(self, sku: str | None = None, warehouse: str | None = None) -> list[StockForecast]:
        """Demand forecast and reorder plan per SKU and warehouse (the defaults of `fulfill inventory forecast`)."""
        return await stock_forecasts(self.store, sku=sku, warehouse=warehouse)

    async def receive_stock(
        self, sku: str, quantity: int, warehouse: str | None = None, *, po: str | None = None
    ) -> StockLevel:
        """Restock (closing purchase order `po` if given), then wake the orders waiting for this SKU that the
        stock covers, oldest first."""
        level = await self.store.stock.receive_stock(sku, quantity, warehouse, po=po)
        await wake_backordered_orders(self.client, self.store, [sku])
        return level

    async def count_stock(self, sku: str, warehouse: str, counted: int, *, reason: str | None = None) -> StockUpdate:
        """A physical count. Orders whose unpicked reservations it released (newest first) are told, so they
        re-reserve elsewhere or wait for stock; a count above the books wakes backorders; ops are emailed of a
        fall below the reorder point."""
        return await self._after_by_hand(await self.store.counts.count_stock(sku, warehouse, counted, reason=reason))

    async def adjust_stock(self, sku: str, warehouse: str, delta: int, *, reason: str) -> StockUpdate:
        return await self._after_by_hand(await self.store.counts.adjust_stock(sku, warehouse, delta, reason=reason))

    async def _after_by_hand(self, change: StockChange) -> StockUpdate:
        crossings = await self.store.stock.low_stock_crossings([change.sku], pending_only=True)
        crossings = [c for c in crossings if c.warehouse == change.warehouse]
        sent, problem = await alert_ops_now(self.store, self.settings, crossings)
        report = await self.after_stock_change(change)
        return StockUpdate(change, report, crossings, ops_alerted=bool(sent), alert_error=problem)

    async def after_stock_change(self, change: StockChange) -> DeliveryReport:
        """Tell the orders a count or adjustment affected: those it released get the `reservation_released`
        the change wrote to the outbox, delivered now (or, if the engine cannot take it, by the worker's relay
        later: see the report), and re-reserve or wait; more stock wakes backorders (best effort: waiting
        orders also recheck periodically)."""
        report = await self._tell_orders(change.released_orders)
        if change.delta > 0:
            await wake_backordered_orders(self.client, self.store, [change.sku])
        return report

    # ------------------------------------------------------------------------------------------ returns

    async def request_return(
        self,
        order_id: str,
        lines: dict[str, int] | list[tuple[str, int]],
        reason: str,
        *,
        exchange: bool = False,
        note: str | None = None,
        by: str | None = None,
    ) -> OrderView:
        """Ask for a return (RMA) of delivered units; refused (InvalidRequest, nothing changed) outside the
        return window, for units not delivered or already returned, or for an unknown reason."""
        pairs = list(lines.items()) if isinstance(lines, dict) else list(lines)
        try:
            request = ReturnRequest.model_validate(
                {
                    "lines": [{"sku": sku, "quantity": qty} for sku, qty in pairs],
                    "reason": reason,
                    "exchange": exchange,
                    "note": note,
                    "by": by,
                }
            )
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None
        return await self._update(order_id, OrderWorkflow.request_return, request)

    async def rma_status(self, rma_id: str) -> RmaView:
        handle = self.client.get_workflow_handle(return_workflow_id(rma_id), result_type=RmaView)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()
            return await handle.query(ReturnWorkflow.status, rpc_timeout=timedelta(seconds=10))
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise RmaNotFound(f"no RMA {rma_id!r}") from None
            raise

    async def receive_return(self, rma_id: str, lines: list[tuple[str, int, str]], note: str | None = None) -> RmaView:
        """The warehouse received an RMA's parcel: (sku, quantity, "resellable" | "damaged") per line."""
        try:
            request = ReceiveReturnRequest.model_validate(
                {
                    "lines": [{"sku": sku, "quantity": qty, "condition": cond} for sku, qty, cond in lines],
                    "note": note,
                }
            )
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None
        return await self._rma_update(rma_id, ReturnWorkflow.receive_return, request)

    async def retry_refund(self, rma_id: str, description: str) -> RmaView:
        """Ops retry a refund that failed (the RMA is REFUND_FAILED)."""
        request = request_model(RetryRefundRequest, description=description)
        return await self._rma_update(rma_id, ReturnWorkflow.retry_refund, request)

    async def _rma_update(self, rma_id: str, update: UpdateMethodMultiParam[..., Any], arg: Any) -> RmaView:
        handle = self.client.get_workflow_handle(return_workflow_id(rma_id), result_type=RmaView)
        try:
            return RmaView.model_validate(await execute_update(handle, update, [arg]))
        except WorkflowUpdateFailedError as err:
            raise RequestRefused(f"RMA {rma_id}: {innermost_message(err)}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                try:
                    description = await handle.describe()
                except RPCError:
                    raise RmaNotFound(f"no RMA {rma_id!r}") from None
                status = description.status.name.lower() if description.status else "closed"
                raise RequestRefused(f"RMA {rma_id} is closed ({status}); nothing can change it now") from None
            raise
