"""The sandbox 3PL's warehouse: ShipBob-shaped orders, what becomes of them, and the stock they draw on.

An order is one ShipBob Order with one shipment (stored under `_sandbox` are when its next automatic step is
due, and which). Accepted, it is Processing and commits its units; `ship_after` seconds later it ships by
itself (Completed / InTransit, a carrier, tracking number and URL; the units leave the shelf), and
`deliver_after` seconds after that it is delivered (Completed / Delivered). What it cannot do, it says as
ShipBob does:

- a SKU it does not stock, or too few fulfillable units: refused at submit (422) when `refuse_at_submit`,
  else accepted into Exception / UnknownSku or OutOfStock (ShipBob's own behaviour, the default), from which it
  goes back to Processing by itself once stock is set that covers it;
- an address whose address1 says "invalid": refused at submit (422), or accepted On Hold / InvalidAddress;
- units gone from the shelf by the time it ships (stock drifted): Exception / OutOfStock then;
- cancel: accepted while Processing, On Hold or in Exception, refused once shipped.

Every change with a ShipBob webhook topic is announced through `emit` (order.shipped, order.shipment.delivered,
order.shipment.exception, order.shipment.on_hold, order.shipment.cancelled). Test controls: refuse or hold the
next orders (with a reason), hold, release, ship or deliver an order now, set stock levels without an order.
"""

from __future__ import annotations

import math
import secrets
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.store import SandboxStore

FULFILLMENT_CENTER = {"id": 1, "name": "Sandbox FC (Cicero, IL)"}
CARRIER, CARRIER_SERVICE = "SandboxPost", "Ground"
# ShipBob's status details: (name, description, id)
IN_TRANSIT = ("InTransit", "Shipment In Transit", 201)
DELIVERED = ("Delivered", "Shipment Delivered", 203)
OUT_OF_STOCK = ("OutOfStock", "No Stock On Hand For Sku", 303)
UNKNOWN_SKU = ("UnknownSku", "No Sku History", 304)
INVALID_ADDRESS = ("InvalidAddress", "Invalid Address", 401)
MANUAL_HOLD = ("ManualHold", "Placed on hold by the merchant", 406)
Detail = tuple[str, str, int]
# Shipment status -> the order's status, as ShipBob shows orders
ORDER_STATUS = {
    "Processing": "Processing",
    "OnHold": "Processing",
    "Exception": "Exception",
    "Completed": "Fulfilled",
    "Cancelled": "Cancelled",
}
COMMITTING = ["Processing", "OnHold"]  # shipments whose units are committed
TOPICS = {"Completed": "order.shipped", "Exception": "order.shipment.exception", "OnHold": "order.shipment.on_hold"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SHIPMENT_IDS = 800000  # an order's shipment id is its id plus this

Emit = Callable[[str, dict[str, Any], float], object]  # (topic, order document, now)


class Rejected(Exception):
    """An API call the 3PL refuses: `status`, a title and errors by field, as ShipBob's problem documents."""

    def __init__(self, status: int, title: str, errors: dict[str, list[str]] | None = None) -> None:
        super().__init__(title)
        self.status, self.title, self.errors = status, title, errors or {}


@dataclass
class Pace:
    ship_after: float
    deliver_after: float


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(ts: float) -> int:
    """Milliseconds since the epoch of `ts` as `iso` writes it (truncated): an ISO time read back compares equal."""
    return (datetime.fromtimestamp(ts, UTC) - EPOCH) // timedelta(milliseconds=1)


def render(doc: dict[str, Any]) -> dict[str, Any]:
    """The order as the API shows it."""
    return {k: v for k, v in doc.items() if k != "_sandbox"}


class Warehouse:
    def __init__(
        self,
        store: SandboxStore,
        *,
        channel_id: str,
        pace: Pace,
        emit: Emit,
        public_base: Callable[[], str],
        wake: Callable[[], None] = lambda: None,
        refuse_at_submit: bool = False,
    ) -> None:
        self._store = store
        self._channel_id = channel_id
        self.pace = pace
        self._emit = emit
        self._public_base = public_base
        self._wake = wake
        self.refuse_at_submit = refuse_at_submit
        self.refuse_next: list[str] = []  # reasons for the next orders to refuse, first first
        self.hold_next: list[str] = []
        self._due: dict[int, float] = {}

    def load(self) -> None:
        """Pick up the automatic steps of orders stored before (a restarted sandbox goes on)."""
        for doc in self._store.threepl_orders(statuses=["Processing", "Completed"]):
            due = doc["_sandbox"].get("due")
            if due is not None:
                self._due[doc["id"]] = due

    # -- orders ----------------------------------------------------------------------------------------------

    def submit(self, body: Any, now: float) -> dict[str, Any]:
        """A new order from a create-order body; Rejected (400 malformed, 422 duplicate or refused) if not."""
        data = validate_order(body)
        if self._store.threepl_order_by_reference(data["reference_id"]) is not None:
            raise Rejected(
                422, "Duplicate reference_id", {"ReferenceId": ["An order with this reference_id already exists"]}
            )
        if self.refuse_next:
            raise Rejected(422, "The order was refused", {"Order": [self.refuse_next.pop(0)]})
        problem = self._problem(data)
        if problem is not None and self.refuse_at_submit:
            field, detail, text = problem
            raise Rejected(422, "The order was refused", {field: [f"{detail[1]}: {text}"]})
        doc = self._new(data, now)
        if problem is not None:
            _, detail, text = problem
            self._set(doc, "OnHold" if detail is INVALID_ADDRESS else "Exception", detail, now, reason=detail[1])
        elif self.hold_next:
            self._set(doc, "OnHold", MANUAL_HOLD, now, reason=self.hold_next.pop(0))
        else:
            self._schedule(doc, "ship", now + self.pace.ship_after)
        order_id = self._store.insert_threepl_order(doc)
        doc["shipments"][0].update(id=order_id + SHIPMENT_IDS, order_id=order_id)
        self._store.update_threepl_order(doc)
        self._announce(doc, now)
        return doc

    def cancel(self, doc: dict[str, Any], now: float) -> dict[str, Any]:
        """ShipBob's cancel answer: per shipment, whether it was cancelled and why not."""
        shipment = doc["shipments"][0]
        ok, reason = True, "Shipment cancelled"
        if shipment["status"] == "Cancelled":
            reason = "Shipment was already cancelled"
        elif shipment["status"] == "Completed":
            ok, reason = False, "Shipment has already shipped and cannot be cancelled"
        else:
            self._set(doc, "Cancelled", None, now)
            self._schedule(doc, None, None)
            self._store.update_threepl_order(doc)
            self._emit("order.shipment.cancelled", doc, now)
        return {
            "order_id": doc["id"],
            "status": "Success" if ok else "Failure",
            "canceled_shipment_results": [
                {"action": "Cancel", "shipment_id": shipment["id"], "is_success": ok, "reason": reason}
            ],
        }

    def tick(self, now: float) -> float:
        """Take every automatic step due by `now`; when the next one is due (inf: none)."""
        for order_id, due in sorted(self._due.items(), key=lambda item: item[1]):
            if due > now:
                continue
            self._due.pop(order_id, None)
            doc = self._store.threepl_order(order_id)
            if doc is None:
                continue
            step, status = doc["_sandbox"].get("step"), doc["shipments"][0]["status"]
            if step == "ship" and status == "Processing":
                self.ship(doc, now)
            elif step == "deliver" and status == "Completed":
                self.deliver(doc, now)
        return min(self._due.values(), default=math.inf)

    def ship(self, doc: dict[str, Any], now: float) -> None:
        """Pick, pack and hand to the carrier; Exception / OutOfStock if the shelf no longer has the units."""
        self._expect(doc, "Processing", "ship")
        levels = self._store.threepl_stock()
        wanted = _units(doc)
        short = sorted(sku for sku, qty in wanted.items() if levels.get(sku, 0) < qty)
        if short:
            self._set(doc, "Exception", OUT_OF_STOCK, now, reason=f"No Stock On Hand For Sku {', '.join(short)}")
            self._schedule(doc, None, None)
        else:
            self._store.set_threepl_stock({sku: levels[sku] - qty for sku, qty in wanted.items()})
            number = "SBX3PL" + "".join(secrets.choice("0123456789") for _ in range(12))
            shipment = doc["shipments"][0]
            shipment["tracking"] = {
                "carrier": CARRIER,
                "carrier_service": CARRIER_SERVICE,
                "tracking_number": number,
                "tracking_url": f"{self._public_base()}/track/{number}",
                "shipping_date": iso(now),
                "bol": None,
                "pro_number": None,
            }
            shipment["actual_fulfillment_date"] = iso(now)
            self._set(doc, "Completed", IN_TRANSIT, now)
            self._schedule(doc, "deliver", now + self.pace.deliver_after)
        self._store.update_threepl_order(doc)
        self._announce(doc, now)

    def deliver(self, doc: dict[str, Any], now: float) -> None:
        self._expect(doc, "Completed", "deliver")
        if doc["shipments"][0].get("delivery_date"):
            raise Rejected(409, "The shipment was delivered already")
        doc["shipments"][0]["delivery_date"] = iso(now)
        self._set(doc, "Completed", DELIVERED, now)
        self._schedule(doc, None, None)
        self._store.update_threepl_order(doc)
        self._emit("order.shipment.delivered", doc, now)

    def hold(self, doc: dict[str, Any], reason: str | None, now: float) -> None:
        self._expect(doc, "Processing", "hold")
        self._set(doc, "OnHold", MANUAL_HOLD, now, reason=reason or MANUAL_HOLD[1])
        self._schedule(doc, None, None)
        self._store.update_threepl_order(doc)
        self._announce(doc, now)

    def release(self, doc: dict[str, Any], now: float) -> None:
        """Back to Processing from a hold: it ships `ship_after` seconds from now."""
        self._expect(doc, "OnHold", "release")
        self._set(doc, "Processing", None, now)
        self._schedule(doc, "ship", now + self.pace.ship_after)
        self._store.update_threepl_order(doc)

    def order(self, reference_id: str) -> dict[str, Any]:
        doc = self._store.threepl_order_by_reference(reference_id)
        if doc is None:
            raise Rejected(404, "No order with this reference_id")
        return doc

    # -- stock -----------------------------------------------------------------------------------------------

    def set_stock(self, levels: dict[str, int], now: float) -> None:
        """Units on hand per SKU, as counted (a delivery in, a recount, shrinkage: no order involved). Orders in
        Exception for stock that now suffices go back to Processing."""
        self._store.set_threepl_stock(levels)
        for doc in self._store.threepl_orders(statuses=["Exception"]):
            if self._stock_problem(_units(doc)) is None:
                self._set(doc, "Processing", None, now)
                self._schedule(doc, "ship", now + self.pace.ship_after)
                self._store.update_threepl_order(doc)

    def committed(self) -> Counter[str]:
        units: Counter[str] = Counter()
        for doc in self._store.threepl_orders(statuses=COMMITTING):
            units.update(_units(doc))
        return units

    def inventory(self) -> list[dict[str, Any]]:
        """ShipBob's inventory levels: per SKU, totals and per fulfillment center (the sandbox has one)."""
        committed = self.committed()
        items = []
        for sku, on_hand in self._store.threepl_stock().items():
            taken = committed.get(sku, 0)
            free = max(on_hand - taken, 0)
            items.append(
                {
                    "inventory_id": zlib.crc32(sku.encode()),
                    "sku": sku,
                    "name": sku,
                    "total_on_hand_quantity": on_hand,
                    "total_committed_quantity": taken,
                    "total_fulfillable_quantity": free,
                    "total_sellable_quantity": free,
                    "fulfillment_centers": [
                        {
                            **FULFILLMENT_CENTER,
                            "on_hand_quantity": on_hand,
                            "committed_quantity": taken,
                            "fulfillable_quantity": free,
                        }
                    ],
                }
            )
        return items

    # -- helpers ---------------------------------------------------------------------------------------------

    def _problem(self, data: dict[str, Any]) -> tuple[str, Detail, str] | None:
        """(field, status detail, what) of what stops the order, or None."""
        if "invalid" in str(data["recipient"]["address"].get("address1", "")).lower():
            return "Recipient.Address.Address1", INVALID_ADDRESS, "the address could not be validated"
        wanted: Counter[str] = Counter()
        for p in data["products"]:
            wanted[p["reference_id"]] += p["quantity"]
        return self._stock_problem(wanted)

    def _stock_problem(self, wanted: Counter[str]) -> tuple[str, Detail, str] | None:
        levels, committed = self._store.threepl_stock(), self.committed()
        for i, (sku, qty) in enumerate(wanted.items()):
            if sku not in levels:
                return f"Products[{i}].ReferenceId", UNKNOWN_SKU, f"{sku} is not a product of this account"
            free = levels[sku] - committed.get(sku, 0)
            if free < qty:
                return f"Products[{i}].Quantity", OUT_OF_STOCK, f"{sku}: {qty} asked, {max(free, 0)} fulfillable"
        return None

    def _new(self, data: dict[str, Any], now: float) -> dict[str, Any]:
        products = [
            {"id": zlib.crc32(p["reference_id"].encode()), "reference_id": p["reference_id"], "quantity": p["quantity"]}
            for p in data["products"]
        ]
        shipment = {
            "id": None,
            "order_id": None,
            "reference_id": data["reference_id"],
            "created_date": iso(now),
            "last_update_at": iso(now),
            "status": "Processing",
            "status_details": [],
            "location": dict(FULFILLMENT_CENTER),
            "tracking": None,
            "actual_fulfillment_date": None,
            "delivery_date": None,
            "ship_option": data["shipping_method"],
            "products": products,
        }
        return {
            "id": None,
            "created_date": iso(now),
            "purchase_date": None,
            "reference_id": data["reference_id"],
            "order_number": data.get("order_number"),
            "status": "Processing",
            "type": data.get("type") or "DTC",
            "channel": {"id": int(self._channel_id) if self._channel_id.isdigit() else 0, "name": "Sandbox channel"},
            "shipping_method": data["shipping_method"],
            "recipient": data["recipient"],
            "products": products,
            "tags": data.get("tags") or [],
            "shipments": [shipment],
            "_sandbox": {"due": None, "step": None, "updated_ms": to_ms(now)},
        }

    def _set(
        self, doc: dict[str, Any], status: str, detail: Detail | None, now: float, reason: str | None = None
    ) -> None:
        shipment = doc["shipments"][0]
        shipment["status"] = status
        shipment["status_details"] = (
            [{"id": detail[2], "name": detail[0], "description": reason or detail[1]}] if detail else []
        )
        shipment["last_update_at"] = iso(now)
        doc["status"] = ORDER_STATUS[status]
        doc["_sandbox"]["updated_ms"] = to_ms(now)

    def _schedule(self, doc: dict[str, Any], step: str | None, at: float | None) -> None:
        doc["_sandbox"].update(step=step, due=at)
        if doc.get("id") is None:
            return  # a new order: _announce schedules it once stored
        if at is None:
            self._due.pop(doc["id"], None)
        else:
            self._due[doc["id"]] = at
            self._wake()

    def _announce(self, doc: dict[str, Any], now: float) -> None:
        """After a change is stored: schedule a new order's step, send the change's webhook."""
        due = doc["_sandbox"].get("due")
        if due is not None and doc["id"] not in self._due:
            self._due[doc["id"]] = due
            self._wake()
        topic = TOPICS.get(doc["shipments"][0]["status"])
        if topic is not None:
            self._emit(topic, doc, now)

    def _expect(self, doc: dict[str, Any], status: str, action: str) -> None:
        actual = doc["shipments"][0]["status"]
        if actual != status:
            raise Rejected(409, f"Cannot {action} a shipment that is {actual} (it must be {status})")


def _units(doc: dict[str, Any]) -> Counter[str]:
    units: Counter[str] = Counter()
    for p in doc["products"]:
        units[p["reference_id"]] += int(p["quantity"])
    return units


def validate_order(body: Any) -> dict[str, Any]:
    """The create-order body if it has what ShipBob requires; Rejected(400) naming each field that is wrong."""
    if not isinstance(body, dict):
        raise Rejected(400, "The body must be a JSON object")
    errors: dict[str, list[str]] = {}
    for field, name in (("reference_id", "ReferenceId"), ("shipping_method", "ShippingMethod")):
        if not _text(body.get(field)):
            errors[name] = [f"The {field} field is required."]
    errors.update(_recipient_errors(body.get("recipient")))
    errors.update(_product_errors(body.get("products")))
    if errors:
        raise Rejected(400, "One or more validation errors occurred.", errors)
    return body


def _recipient_errors(recipient: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    address = recipient.get("address") if isinstance(recipient, dict) else None
    if not isinstance(recipient, dict) or not _text(recipient.get("name")):
        errors["Recipient.Name"] = ["The recipient's name is required."]
    for field in ("address1", "city", "country"):
        if not isinstance(address, dict) or not _text(address.get(field)):
            errors[f"Recipient.Address.{field.title()}"] = [f"The {field} field is required."]
    return errors


def _product_errors(products: Any) -> dict[str, list[str]]:
    if not isinstance(products, list) or not products:
        return {"Products": ["At least one product is required."]}
    errors: dict[str, list[str]] = {}
    for i, p in enumerate(products):
        quantity = p.get("quantity") if isinstance(p, dict) else None
        if not isinstance(p, dict) or not _text(p.get("reference_id")):
            errors[f"Products[{i}].ReferenceId"] = ["The reference_id (SKU) is required."]
        elif not isinstance(quantity, int) or isinstance(quantity, bool) or quantity <= 0:
            errors[f"Products[{i}].Quantity"] = ["The quantity must be a positive whole number."]
    return errors


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
