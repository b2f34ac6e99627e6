"""`fulfill notifications`: the delivery log, each message with our status and the provider's word on it.
Database only (no Temporal)."""

from __future__ import annotations

from typing import Annotated

import typer

from common.cli._base import out, print_json, run_async
from common.cli._output import key, stamp, table, time_column
from common.cli.inventory import open_store
from common.notifications.delivery import NotificationView, notification_view


@run_async
async def notifications(
    order: Annotated[str | None, typer.Option("--order", help="Only the messages about this order.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=10_000, help="Without --order: the latest this many.")
    ] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Emails and SMS sent to customers (and ops alerts), oldest first: when, the event, the channel, to whom
    (masked), our status (sent, failed) and the provider's delivery status with its error (delivered,
    undelivered, bounced, opted-out), with what became of an undelivered SMS's email fallback."""
    async with open_store() as store:
        records = await store.notifications.notifications(order, limit=None if order else limit)
    views = [notification_view(r) for r in records]
    if as_json:
        print_json(views)
        return
    if not views:
        out.print("no messages" + (f" about order {order}" if order else " yet"), markup=False, highlight=False)
        return
    # Narrow enough for 80 columns: the order over its event, the channel before its recipient (each whole)
    shown = table(time_column(), "event" if order else "order, event", "channel, to", key("status"), "delivery")
    for v in views:
        event = v.event if order else f"{v.order_id} {v.event}"
        shown.add_row(stamp(v.created_at), event, f"{v.channel} {v.to}", v.status, _delivery(v))
    out.print(shown)


def _delivery(v: NotificationView) -> str:
    """The provider's word (and error), else why we did not send it; an SMS's email fallback after it."""
    if v.delivery_status:
        text = v.delivery_status + (f" ({v.delivery_error})" if v.delivery_error else "")
    elif v.status == "failed" and v.error:
        text = v.error
    else:
        text = "-"
    if v.fallback:
        text += f"; email fallback {v.fallback}"
    return text
