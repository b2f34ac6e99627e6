from __future__ import annotations

from common.messages import render
from common.models import Channel, NotificationEvent, NotifyRequest
from tests.orders import sample_order


def request(event: NotificationEvent, **context: str) -> NotifyRequest:
    order = sample_order()
    return NotifyRequest(
        order_id=order.order_id,
        event=event,
        customer=order.customer,
        channels=list(order.customer.channels),
        context=context,
    )


def test_shipped_email_has_subject_tracking_link_and_html_part() -> None:
    msg = render(
        request(
            NotificationEvent.SHIPPED,
            carrier="SandboxPost",
            tracking_number="SBX1",
            tracking_url="http://t/SBX1",
        ),
        Channel.EMAIL,
    )
    assert msg.subject == "Order ORD-1001 has shipped"
    assert "SBX1" in msg.text and "http://t/SBX1" in msg.text
    assert msg.html is not None and "Ada Lovelace" in msg.html


def test_sms_is_one_plain_sentence_without_subject() -> None:
    msg = render(request(NotificationEvent.OUT_FOR_DELIVERY, carrier="QuickShip", tracking_url="http://t"), Channel.SMS)
    assert msg.subject is None and msg.html is None
    assert msg.text.startswith("Order ORD-1001 is out for delivery")
    assert len(msg.text) <= 160


def test_html_is_escaped() -> None:
    req = request(NotificationEvent.ORDER_CONFIRMED)
    req = req.model_copy(update={"customer": req.customer.model_copy(update={"name": "<b>Eve</b>"})})
    msg = render(req, Channel.EMAIL)
    assert msg.html is not None and "<b>Eve" not in msg.html and "&lt;b&gt;Eve" in msg.html


def test_missing_context_shows_a_dash_not_a_crash() -> None:
    msg = render(request(NotificationEvent.SHIPPED), Channel.SMS)
    assert "with -." in msg.text
