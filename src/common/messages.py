"""Customer-facing texts, one per (event, channel). Pure functions: easy to test and to change."""

from __future__ import annotations

import html
from dataclasses import dataclass

from common.models import Channel, NotificationEvent, NotifyRequest


@dataclass(frozen=True)
class RenderedMessage:
    subject: str | None  # email only
    text: str
    html: str | None  # email only


# (subject, email/SMS sentence). {placeholders} come from NotifyRequest.context plus order_id and name. A parcel's
# messages carry {parcel} in the subject too: each parcel's emails of a split order have a subject of their own.
_TEMPLATES: dict[NotificationEvent, tuple[str, str]] = {
    NotificationEvent.ORDER_CONFIRMED: (
        "Order {order_id} confirmed",
        "Thanks {name}! We received order {order_id} and are getting it ready.",
    ),
    NotificationEvent.BACKORDERED: (
        "Order {order_id} is delayed",
        "Sorry {name}, order {order_id} is waiting for stock ({short}). We will ship as soon as it arrives.",
    ),
    NotificationEvent.SHIPPED: (
        "Order {order_id} has shipped{parcel}",
        "Order {order_id}{parcel} is on its way with {carrier}. Tracking number {tracking_number}: {tracking_url}",
    ),
    NotificationEvent.OUT_FOR_DELIVERY: (
        "Order {order_id} is out for delivery{parcel}",
        "Order {order_id}{parcel} is out for delivery today with {carrier}. Track it: {tracking_url}",
    ),
    NotificationEvent.DELIVERED: (
        "Order {order_id} was delivered{parcel}",
        "Order {order_id}{parcel} was delivered. Enjoy, {name}! Problem with it? Just reply to this message.",
    ),
    NotificationEvent.CANCELLED: (
        "Order {order_id} was cancelled",
        "Order {order_id} was cancelled ({reason}). Nothing was shipped and you will not be charged for it.",
    ),
    NotificationEvent.ADDRESS_PROBLEM: (
        "Order {order_id}: please check your delivery address",
        "The carrier could not accept the delivery address for order {order_id}. "
        "We are on it; reply with a corrected address if you can.",
    ),
    NotificationEvent.PICK_DELAYED: (
        "Order {order_id} is delayed",
        "Sorry {name}, order {order_id} is taking longer than usual to leave our warehouse. "
        "We will tell you as soon as it ships.",
    ),
    NotificationEvent.DELIVERY_DELAYED: (
        "Order {order_id} is running late",
        "Order {order_id} with {carrier} missed its expected delivery ({estimate}). Track it: {tracking_url}",
    ),
    NotificationEvent.DELIVERY_PROBLEM: (
        "Order {order_id}: delivery problem",
        "{carrier} reports a problem delivering order {order_id}: {problem}. We are on it and will tell you "
        "what happens next.",
    ),
    NotificationEvent.PARTIAL_SHIPMENT: (
        "Order {order_id} ships in parts",
        "Part of order {order_id} is on its way to you now; {short} is out of stock and follows as soon as it "
        "arrives. You will get tracking for each parcel.",
    ),
    NotificationEvent.RESHIPPED: (
        "Order {order_id}: we are sending it again",
        "Sorry {name}, the parcel for order {order_id} did not make it. We are sending the goods again and "
        "will share the new tracking number.",
    ),
    NotificationEvent.REFUND_ISSUED: (
        "Order {order_id}: refund issued",
        "Part of order {order_id} ({what}) could not be delivered, so we refunded {amount} for it. Sorry for the "
        "trouble, {name}.",
    ),
    NotificationEvent.PARTLY_CANCELLED: (
        "Order {order_id}: part of it is cancelled",
        "Part of order {order_id} ({what}) is cancelled: {reason}. You will not be charged for it; the rest of "
        "your order is not affected.",
    ),
    NotificationEvent.FULFILMENT_FAILED: (
        "Order {order_id} could not be delivered",
        "Sorry {name}, we could not deliver order {order_id} ({what}). You will not be charged for it; our team "
        "will be in touch.",
    ),
    # Returns (context: rma_id and the values below)
    NotificationEvent.RETURN_LABEL: (
        "Order {order_id}: your return label ({rma_id})",
        "Your return {rma_id} for order {order_id} ({items}) is approved. Print your {carrier} return label: "
        "{label_url} and track the parcel ({tracking_number}): {tracking_url}",
    ),
    NotificationEvent.RETURN_EXPIRED: (
        "Order {order_id}: return {rma_id} expired",
        "Your return {rma_id} for order {order_id} expired: the parcel was not sent within {days} days. "
        "Reply to this message if you still want to return it.",
    ),
    NotificationEvent.RETURN_RECEIVED: (
        "Order {order_id}: we received your return {rma_id}",
        "We received your return {rma_id} for order {order_id}: {items}. Thanks, {name}!",
    ),
    NotificationEvent.RETURN_REFUNDED: (
        "Order {order_id}: refund issued for return {rma_id}",
        "We refunded {amount} for your return {rma_id} (order {order_id}). It may take a few days to show.",
    ),
    NotificationEvent.REPLACEMENT_PLACED: (
        "Order {order_id}: replacement order {replacement_order_id} placed",
        "For your return {rma_id} we placed replacement order {replacement_order_id} for order {order_id}. "
        "It ships as soon as your return parcel is on its way to us.",
    ),
}


class _Defaults(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "-"


def _reason(text: str) -> str:
    """A cancellation reason as the customer reads it after "was cancelled": the order's own note repeats the
    word ("cancelled: customer changed mind")."""
    return text.removeprefix("cancelled: ").strip() or "cancelled"


def render(request: NotifyRequest, channel: Channel) -> RenderedMessage:
    subject_tpl, body_tpl = _TEMPLATES[request.event]
    # "parcel" is empty for a one-parcel order: "(parcel 2: TEE-M x1)" only when it ships in several
    values = _Defaults(
        {"parcel": "", **request.context}, order_id=request.order_id, name=request.customer.name.split()[0]
    )
    if "reason" in values:
        values["reason"] = _reason(values["reason"])
    subject = subject_tpl.format_map(values)
    body = body_tpl.format_map(values)
    if channel == Channel.SMS:
        return RenderedMessage(subject=None, text=body, html=None)
    text = f"Hello {request.customer.name},\n\n{body}\n\n-- The fulfillment team\n"
    page = (
        f"<html><body><p>Hello {html.escape(request.customer.name)},</p>"
        f"<p>{html.escape(body)}</p><p>&mdash; The fulfillment team</p></body></html>"
    )
    return RenderedMessage(subject=subject, text=text, html=page)
