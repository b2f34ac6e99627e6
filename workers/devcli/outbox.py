"""`fulfill outbox`: what the sandbox SMTP/SMS servers received."""

from __future__ import annotations

from typing import Annotated

import typer

from common.cli._base import out, print_json, run_async
from common.cli._output import key, table, utc
from common.config import get_settings
from sandbox import fetch_outbox


@run_async
async def outbox(
    order: Annotated[str | None, typer.Option("--order", help="Only messages about this order.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Emails and SMS the sandbox servers received (the demo's customer inboxes), each SMS with its delivery
    status; also the answers a customer got to a text (`POST /sms/_sandbox/inbound`)."""
    settings = get_settings()
    messages = await fetch_outbox(f"http://{settings.sandbox_host}:{settings.sandbox_http_port}", order)
    if as_json:
        print_json(messages)
        return
    # The subject is shown as it was sent: "[ops] Delivery exception on order X" keeps its "[ops]".
    # status: an SMS's own delivery status in the sandbox network (queued, sent, delivered, undelivered, failed)
    shown = table(key("time (UTC)"), key("channel"), key("to"), key("order"), key("status"), "subject / text")
    for m in messages:
        shown.add_row(
            f"{utc(m.received_at):%H:%M:%S}",
            m.channel,
            m.recipient,
            m.order_id or "",
            m.status or "-",
            m.subject or m.body,
        )
    out.print(shown)
