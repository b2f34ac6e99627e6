"""Low-stock alerts: one email to the ops mailbox per crossing of the reorder point.

The Store records a crossing when available stock falls to or below a (sku, warehouse)'s reorder point and
re-arms when it rises above it again. Here each open crossing not yet alerted is emailed once, under the
idempotency key `lowstock:<sku>:<warehouse>:<crossing id>` in the notification log, then marked alerted.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from typing import Protocol

from common.config import Settings
from common.integrations.email import EmailPermanentError, EmailSender
from common.inventory.contracts import LowStockCrossing
from common.inventory.stock import StockStore
from common.logs import describe_error
from common.notifications.store import NotificationStore

log = logging.getLogger("fulfill.inventory")

LOW_STOCK_EVENT = "low_stock"
# The notification log is per order; inventory alerts belong to no order.
ALERT_ORDER_ID = "inventory"


class Stores(Protocol):
    """The stores an alert works with (common.store.Store has them)."""

    stock: StockStore
    notifications: NotificationStore


def low_stock_key(crossing: LowStockCrossing) -> str:
    return f"lowstock:{crossing.sku}:{crossing.warehouse}:{crossing.id}"


async def low_stock_message(store: Stores, crossing: LowStockCrossing) -> tuple[str, str]:
    """Subject and text of the alert, with what is on hand and incoming now."""
    positions = await store.stock.inventory_positions(crossing.sku, crossing.warehouse)
    position = positions[0] if positions else None
    subject = f"Low stock: {crossing.sku} at {crossing.warehouse} ({crossing.available} available)"
    lines = [
        f"Available stock of {crossing.sku} at {crossing.warehouse} fell to {crossing.available}, at or below its "
        f"reorder point of {crossing.reorder_point} ({crossing.crossed_at:%Y-%m-%d %H:%M} UTC).",
    ]
    if position is not None:
        eta = f", next due {position.next_eta:%Y-%m-%d}" if position.next_eta else ""
        lines.append(
            f"Now: {position.on_hand} on hand, {position.reserved} reserved, {position.available} available, "
            f"{position.incoming} incoming{eta}."
        )
    lines.append(
        f"Reorder: `fulfill inventory forecast --sku {crossing.sku}` suggests a quantity; record the purchase "
        f"order with `fulfill inventory expect {crossing.sku} QTY --warehouse {crossing.warehouse}`."
    )
    return subject, "\n\n".join(lines)


async def send_low_stock_alerts(
    store: Stores, email: EmailSender, recipient: str, skus: Iterable[str] | None = None
) -> list[LowStockCrossing]:
    """Email `recipient` about every open, not yet alerted crossing (of `skus`, or all). Returns those
    sent now. Safe to call again at any point: a crossing already sent is only marked alerted. A refused
    recipient (permanent SMTP error) is logged and the crossing stays pending; a transient error raises
    (after the others were tried) so the caller retries."""
    wanted = None if skus is None else sorted(set(skus))
    if wanted == []:
        wanted = None
    sent: list[LowStockCrossing] = []
    failure: Exception | None = None
    for crossing in await store.stock.low_stock_crossings(wanted, pending_only=True):
        key = low_stock_key(crossing)
        subject, text = await low_stock_message(store, crossing)
        claimed = await store.notifications.claim_notification(
            key,
            order_id=ALERT_ORDER_ID,
            event=LOW_STOCK_EVENT,
            channel="email",
            recipient=recipient,
            subject=subject,
            body=text,
        )
        if not claimed:  # sent before, but not marked on the crossing (a crash in between)
            await store.stock.mark_low_stock_alerted(crossing.id)
            continue
        try:
            provider_id = await email.send(
                to=recipient,
                subject=f"[ops] {subject}",
                text=text,
                html=f"<pre>{html.escape(text)}</pre>",
                message_id=f"<{key.replace(':', '.')}@fulfill>",
                headers={"X-Fulfill-Alert": LOW_STOCK_EVENT, "X-Sku": crossing.sku},
            )
        except EmailPermanentError as err:
            await store.notifications.mark_notification_failed(key, str(err))
            log.warning("low-stock alert %s not sent: %s", key, err)
            continue
        except Exception as err:
            await store.notifications.mark_notification_failed(key, str(err))
            failure = failure or err
            continue
        await store.notifications.mark_notification_sent(key, provider_id)
        await store.stock.mark_low_stock_alerted(crossing.id)
        sent.append(crossing)
    if failure is not None:
        raise failure
    return sent


async def alert_ops_now(
    store: Stores, settings: Settings, crossings: list[LowStockCrossing]
) -> tuple[list[LowStockCrossing], str | None]:
    """After a stock change by hand (count, adjustment, forecast): email ops about its new crossings now.
    Returns those sent and, if the email failed, why; the change stands and a failed alert stays pending for
    the next alert run."""
    if not crossings:
        return [], None
    email = EmailSender(settings)
    try:
        return await send_low_stock_alerts(store, email, settings.ops_email, {c.sku for c in crossings}), None
    except Exception as e:  # the stock change is done; the alert waits for the next run
        return [], describe_error(e, limit=300)
    finally:
        await email.close()
