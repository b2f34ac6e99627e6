"""`fulfill dev ...`: the embedded stack (`make run`), outages of its sandbox services, and a customer texting
the shop (STOP, START, HELP) through the sandbox Twilio."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from common.cli._base import EXIT_BAD_INPUT, EXIT_REFUSED, err, out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, table
from common.config import get_settings
from sandbox import (
    SERVICES,
    SandboxError,
    SandboxRefused,
    end_outage,
    list_outages,
    start_outage,
    text_from,
)

dev_app = CliApp(help="The embedded stack for development and demos.", no_args_is_help=True)

SERVICE_HELP = f"Sandbox service: {', '.join(SERVICES)}."


@dev_app.command("up")
def dev_up() -> None:
    """Start Temporal with its Web UI, the sandbox servers, a worker and the simulated picker."""
    from workers.devstack import main

    main()


@dev_app.command("outage")
@run_async
async def dev_outage(
    service: Annotated[str, typer.Argument(help=SERVICE_HELP, show_default=False)],
    seconds: Annotated[
        float | None,
        typer.Option("--for", help="Seconds the outage lasts (default: until --end).", show_default=False),
    ] = None,
    end: Annotated[bool, typer.Option("--end", help="End the service's outage now.")] = False,
) -> None:
    """Put a sandbox service into an outage (it fails as its provider does when down), or end it.

    Orders that need it wait and retry (watch them in the Temporal Web UI) and go on once the outage ends."""
    if service not in SERVICES:
        _bad_input(f"unknown service {service!r}: choose one of {', '.join(SERVICES)}")
    if end and seconds is not None:
        _bad_input("give either --for SECONDS (start an outage) or --end (end it), not both")
    if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
        _bad_input(f"--for must be a positive number of seconds, got {seconds:g}")
    base = _sandbox_url()
    try:
        if end:
            ended, _ = await end_outage(base, service)
            out.print(f"outage of {service} ended" if ended else f"{service} had no outage: nothing changed")
            return
        outages = await start_outage(base, service, seconds)
    except SandboxRefused as e:
        _bad_input(str(e))
    except SandboxError as e:
        _unreachable(e)
    ends_at = next((o.ends_at for o in outages if o.service == service), None)
    when = "until ended" if seconds is None else f"for {_duration(seconds)}"
    if ends_at is not None:
        when += f" (until {ends_at:%H:%M:%S} UTC)"
    out.print(f"{service} is down {when}.")
    out.print(f"end it with: fulfill dev outage {service} --end", soft_wrap=True)  # a command: never wrapped


@dev_app.command("outages")
@run_async
async def dev_outages(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The sandbox services in an outage now, and when each ends."""
    try:
        outages = await list_outages(_sandbox_url())
    except SandboxError as e:
        _unreachable(e)
    if as_json:
        print_json(outages)
        return
    if not outages:
        out.print(f"no outages: every sandbox service is up ({', '.join(SERVICES)})")
        return
    shown = table(key("service"), "ends in", key("ends at (UTC)"))
    for o in outages:
        if o.ends_at is None:
            shown.add_row(o.service, "until ended", "-")
        else:
            left = (o.ends_at - datetime.now(UTC)).total_seconds()
            shown.add_row(o.service, _duration(left), f"{o.ends_at:%H:%M:%S}")
    out.print(shown)


@dev_app.command("text")
@run_async
async def dev_text(
    phone: Annotated[str, typer.Argument(help="The customer's number, e.g. +15555550100.", show_default=False)],
    body: Annotated[str, typer.Argument(help="What they text: STOP, START, HELP, ...", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Text the shop's number as a customer (the sandbox Twilio posts it to the engine's inbound webhook).

    STOP (or STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT): no more SMS to that number, email goes on; START (YES,
    UNSTOP): SMS again; HELP: the engine's help reply. Prints what the customer got back."""
    try:
        answer = await text_from(_sandbox_url(), phone, body)
    except SandboxRefused as e:
        _bad_input(str(e))
    except SandboxError as e:
        _unreachable(e)
    if as_json:
        print_json(answer)
        return
    state = "opted out of SMS" if answer["opted_out"] else "gets SMS"
    out.print(f"{phone} texted {body!r}: the number {state}", markup=False, highlight=False)
    engine = answer["engine"]
    if engine is None:
        out.print("the engine was not told: FULFILL_SANDBOX_SMS_INBOUND_URL is not set", markup=False)
    elif engine["status"] is None:
        out.print(f"the engine was not told: nothing answered at {engine['url']}", markup=False, soft_wrap=True)
    elif engine["status"] >= 300:
        out.print(f"the engine refused it: HTTP {engine['status']}", markup=False)
    for reply in answer["replies"]:
        out.print(f"reply: {reply}", markup=False, highlight=False)


def _sandbox_url() -> str:
    s = get_settings()
    host = f"[{s.sandbox_host}]" if ":" in s.sandbox_host else s.sandbox_host
    return f"http://{host}:{s.sandbox_http_port}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(max(round(seconds), 0), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _bad_input(message: str) -> NoReturn:
    err.print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _unreachable(e: SandboxError) -> NoReturn:
    err.print(f"[red]error:[/] {escape(str(e))}. Is `make run` up?", highlight=False)
    raise typer.Exit(EXIT_REFUSED)
