"""The engine's Python API for programs; the `fulfill` CLI is a thin layer over it.

async with await FulfillmentApi.connect(get_settings()) as api:
    await api.place_order(json_text)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Self

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, FailureError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import UpdateMethodMultiParam

from common.config import Settings
from common.errors import (
    FulfillmentError,
    InvalidOrder,
    InvalidRequest,
    OrderAlreadyExists,
    OrderNotFound,
    PickNotAllowed,
)
from common.intake import describe_error, parse_order
from common.inventory.contracts import StockChange, StockLevel
from common.models import (
    ORDER_WORKFLOW_VERSION,
    Address,
    CancelRequest,
    HoldRequest,
    Order,
    OrderPolicy,
    OrderStatus,
    OrderView,
    OrderWorkflowInput,
    ResolveDeliveryRequest,
    RetryRequest,
    workflow_id_for,
)
from common.order_signals import DeliveryReport, deliver_order_signals, wake_backordered_orders
from common.returns import ReceiveReturnRequest, RetryRefundRequest, ReturnRequest, RmaView, return_workflow_id
from common.store import Store
from common.temporal import CUSTOMER_ID, ORDER_STATUS, PICK_OVERDUE, SKUS, connect, execute_update
from common.warehouse.contracts import PickTask, PickTaskClosed, ShipmentReleased
from common.warehouse.short_picks import shortage_problem
from workflows.order import OrderWorkflow
from workflows.returns import ReturnWorkflow

WORKFLOW_TYPE = "OrderWorkflow"
# How an order's last run ended for it to be placed again under its id
_PLACEABLE_AGAIN = frozenset(
    {WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT}
)


@dataclass(frozen=True)
class PlacedOrder:
    order_id: str
    workflow_id: str
    run_id: str


@dataclass(frozen=True)
class OrderSummary:
    order_id: str
    status: str
    customer_id: str
    started_at: datetime | None
    closed_at: datetime | None


class FulfillmentApi:
    def __init__(self, client: Client, store: Store, settings: Settings) -> None:
        self.client = client
        self.store = store
        self.settings = settings

    @classmethod
    async def connect(cls, settings: Settings, *, store: Store | None = None, client: Client | None = None) -> Self:
        store = store or await Store.open(settings.database_url)
        client = client or await connect(settings)
        return cls(client, store, settings)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()

    # ------------------------------------------------------------------------------------------ orders

    def policy(self) -> OrderPolicy:
        s = self.settings
        return OrderPolicy(
            tracking_poll_interval_s=s.tracking_poll_interval,
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
        )

    async def place_order(self, data: str | bytes | dict[str, Any] | Order) -> PlacedOrder:
        order = parse_order(data)
        prices = await self.store.catalog.prices([line.sku for line in order.lines])
        unknown = [line.sku for line in order.lines if line.sku not in prices]
        if unknown:
            raise InvalidOrder([f"lines: unknown sku {sku!r} (not in the catalogue)" for sku in unknown])
        order = with_prices(order, prices)
        try:
            handle = await self._start(order, placement=1)
        except WorkflowAlreadyStartedError:
            last_run = await self._last_run(order.order_id)
            placement = await _next_placement(last_run)
            if placement is None:
                raise OrderAlreadyExists(_already_placed(order.order_id, last_run)) from None
            try:
                handle = await self._start(order, placement=placement)
            except WorkflowAlreadyStartedError:  # placed again by someone else just now
                last_run = await self._last_run(order.order_id)
                raise OrderAlreadyExists(_already_placed(order.order_id, last_run)) from None
        return PlacedOrder(order.order_id, handle.id, handle.result_run_id or "")

    async def _start(self, order: Order, *, placement: int) -> WorkflowHandle[Any, OrderView]:
        return await self.client.start_workflow(
            OrderWorkflow.run,
            OrderWorkflowInput(
                order=order, policy=self.policy(), workflow_version=ORDER_WORKFLOW_VERSION, placement=placement
            ),
            id=order.workflow_id,
            task_queue=self.settings.task_queue,
            # An order id is placed once: a second placement starts nothing, unless the order ended for good
            # without being fulfilled (FAILED, or terminated): then it may be placed again (_next_placement).
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
            memo={"placement": placement},
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

    async def order_status(self, order_id: str) -> OrderView:
        handle = self._handle(order_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.COMPLETED:
                return await handle.result()  # the final view, readable without a worker
            if description.status == WorkflowExecutionStatus.FAILED:
                final = await _failed_view(handle)
                if final is not None:
                    return final
            return await handle.query(OrderWorkflow.status, rpc_timeout=timedelta(seconds=10))
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise OrderNotFound(f"no order {order_id!r}") from None
            raise

    async def list_orders(self, status: OrderStatus | None = None, limit: int = 200) -> list[OrderSummary]:
        query = f'WorkflowType = "{WORKFLOW_TYPE}"'
        if status is not None:
            query += f' AND OrderStatus = "{status.value}"'
        orders = []
        async for wf in self.client.list_workflows(query, limit=limit):
            attrs = wf.typed_search_attributes
            orders.append(
                OrderSummary(
                    order_id=wf.id.removeprefix("order-"),
                    status=attrs.get(ORDER_STATUS) or "?",
                    customer_id=attrs.get(CUSTOMER_ID) or "?",
                    started_at=wf.start_time,
                    closed_at=wf.close_time,
                )
            )
        return orders

    async def cancel_order(self, order_id: str, reason: str) -> OrderView:
        """Cancel with compensation; returns once the order is CANCELLED. Refused once shipped (the carrier is
        asked)."""
        return await self._update(order_id, OrderWorkflow.cancel, CancelRequest(reason=reason))

    async def retry_order(self, order_id: str, note: str | None = None) -> OrderView:
        """Retry what failed and waits for ops (the order is FAILED); refused if nothing failed."""
        try:
            request = RetryRequest(note=note)
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None
        return await self._update(order_id, OrderWorkflow.retry, request)

    async def hold_order(self, order_id: str, reason: str) -> OrderView:
        return await self._update(order_id, OrderWorkflow.hold, HoldRequest(reason=reason))

    async def release_order(self, order_id: str) -> OrderView:
        return await self._update(order_id, OrderWorkflow.release, None)

    async def resolve_delivery_exception(
        self, order_id: str, action: str, note: str | None = None, *, shipment: int | None = None
    ) -> OrderView:
        try:
            request = ResolveDeliveryRequest(action=action, note=note, shipment=shipment)  # type: ignore[arg-type]
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None
        return await self._update(order_id, OrderWorkflow.resolve_delivery_exception, request)

    async def update_address(self, order_id: str, address: Address | dict[str, Any]) -> OrderView:
        try:
            parsed = Address.model_validate(address)
        except ValidationError as err:
            raise InvalidRequest(
                "invalid address: " + "; ".join(describe_error(e, prefix="ship_to") for e in err.errors())
            ) from None
        return await self._update(order_id, OrderWorkflow.update_address, parsed)

    async def _update(self, order_id: str, update: UpdateMethodMultiParam[..., Any], arg: Any) -> OrderView:
        """Run a validated Update (`OrderWorkflow.cancel`, ...); a refusal (by its validator, or by the carrier it
        asked) comes back as InvalidRequest, order unchanged. Returns the order as it stands after it."""
        handle = self._handle(order_id)
        try:
            args = [] if arg is None else [arg]
            await execute_update(handle, update, args)
            return await self.order_status(order_id)
        except WorkflowUpdateFailedError as err:
            raise InvalidRequest(f"order {order_id}: {_cause(err)}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # Also what the server says for an Update to a closed workflow: tell the two apart.
                raise await self._not_running(order_id) from None
            raise

    async def _not_running(self, order_id: str) -> FulfillmentError:
        try:
            description = await self._handle(order_id).describe()
        except RPCError:
            return OrderNotFound(f"no order {order_id!r}")
        # The order's own status (CANCELLED, COMPLETED...), not the workflow's ("completed" for a cancelled order)
        status = description.typed_search_attributes.get(ORDER_STATUS)
        if status is None:
            status = description.status.name.lower() if description.status else "closed"
        return InvalidRequest(f"order {order_id} is closed ({status}); nothing can change it now")

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
            raise PickNotAllowed(f"no pick task {task_id!r}")
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
            return DeliveryReport(error=f"{type(err).__name__}: {err}"[:300])

    # ------------------------------------------------------------------------------------------ stock

    async def stock(self, sku: str | None = None, warehouse: str | None = None) -> list[StockLevel]:
        return await self.store.stock.stock_levels(sku, warehouse)

    async def receive_stock(
        self, sku: str, quantity: int, warehouse: str | None = None, *, po: str | None = None
    ) -> StockLevel:
        """Restock (closing purchase order `po` if given), then wake the orders waiting for this SKU that the
        stock covers, oldest first."""
        level = await self.store.stock.receive_stock(sku, quantity, warehouse, po=po)
        await wake_backordered_orders(self.client, self.store, [sku])
        return level

    async def count_stock(self, sku: str, warehouse: str, counted: int, *, reason: str | None = None) -> StockChange:
        """A physical count. Orders whose unpicked reservations it released (newest first) are told, so they
        re-reserve elsewhere or wait for stock; a count above the books wakes backorders."""
        change = await self.store.counts.count_stock(sku, warehouse, counted, reason=reason)
        await self.after_stock_change(change)
        return change

    async def adjust_stock(self, sku: str, warehouse: str, delta: int, *, reason: str) -> StockChange:
        change = await self.store.counts.adjust_stock(sku, warehouse, delta, reason=reason)
        await self.after_stock_change(change)
        return change

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
                raise InvalidRequest(f"no RMA {rma_id!r}") from None
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
        try:
            request = RetryRefundRequest(description=description)
        except ValidationError as err:
            raise InvalidRequest("; ".join(describe_error(e) for e in err.errors())) from None
        return await self._rma_update(rma_id, ReturnWorkflow.retry_refund, request)

    async def _rma_update(self, rma_id: str, update: UpdateMethodMultiParam[..., Any], arg: Any) -> RmaView:
        handle = self.client.get_workflow_handle(return_workflow_id(rma_id), result_type=RmaView)
        try:
            return RmaView.model_validate(await execute_update(handle, update, [arg]))
        except WorkflowUpdateFailedError as err:
            raise InvalidRequest(f"RMA {rma_id}: {_cause(err)}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                try:
                    description = await handle.describe()
                except RPCError:
                    raise InvalidRequest(f"no RMA {rma_id!r}") from None
                status = description.status.name.lower() if description.status else "closed"
                raise InvalidRequest(f"RMA {rma_id} is closed ({status}); nothing can change it now") from None
            raise


async def _failed_view(handle: WorkflowHandle[Any, OrderView]) -> OrderView | None:
    """The final view a FAILED order closed with (the details of its failure), readable without a worker."""
    try:
        await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.details:
            detail = cause.details[0]
            try:
                return OrderView.model_validate(detail)
            except ValidationError:
                return None
    return None


def with_prices(order: Order, catalogue_cents: dict[str, int]) -> Order:
    """The order with a unit_price on every line: the price paid when the storefront gave one, else the catalogue
    price now, at placement (kept with the order, so a later price change does not change its refunds)."""
    if all(line.unit_price is not None for line in order.lines):
        return order
    lines = [
        line
        if line.unit_price is not None
        else line.model_copy(update={"unit_price": Decimal(catalogue_cents[line.sku]) / 100})
        for line in order.lines
    ]
    return order.model_copy(update={"lines": lines})


def _cause(err: BaseException) -> str:
    """The innermost message, e.g. the text a workflow's Update validator raised."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err.message if isinstance(err, FailureError) else str(err)


async def _next_placement(last_run: WorkflowExecutionDescription | None) -> int | None:
    """The placement number for placing the order again, if its last run ended for good without being
    fulfilled; None if it runs or ended otherwise (completed, cancelled): then it cannot be."""
    if last_run is None or last_run.status not in _PLACEABLE_AGAIN:
        return None
    return int(await last_run.memo_value("placement", default=1)) + 1


def _already_placed(order_id: str, last_run: WorkflowExecutionDescription | None) -> str:
    message = f"order {order_id} already exists (workflow {workflow_id_for(order_id)}); nothing was started"
    status = last_run.typed_search_attributes.get(ORDER_STATUS) if last_run is not None else None
    if status == OrderStatus.FAILED.value:
        message += f". It is FAILED and waits for ops: `fulfill order retry {order_id}`, or cancel it"
    return message
