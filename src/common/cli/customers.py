"""`fulfill customer forget`: the right to erasure (common.privacy.erasure)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from common.cli._base import EXIT_BAD_INPUT, EXIT_REFUSED, connect_api, err, out, print_json, run_async
from common.cli._help import CliApp
from common.privacy.erasure import CustomerStillActive, UnknownCustomer

customer_app = CliApp(help="Customers: erase one's personal data (the right to erasure).", no_args_is_help=True)


@customer_app.command("forget")
@run_async
async def customer_forget(
    customer_id: Annotated[str, typer.Argument(help="The customer's id, as orders name it (customer.id).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask: erasure cannot be undone.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Erase a customer whose orders and returns are all closed: their data key is destroyed (every encrypted
    history of theirs becomes unreadable), plaintext histories from before encryption are deleted, and our
    database's copies (messages, order signals, RMA notes, label links) are redacted. Prints what it could not
    erase. Refused, changing nothing, while any of their workflows runs."""
    if not yes:
        if not sys.stdin.isatty():
            err.print("error: erasure cannot be undone: add --yes to confirm (no terminal to ask on)")
            raise typer.Exit(EXIT_BAD_INPUT)
        typer.confirm(f"Erase customer {customer_id}'s data for good?", abort=True)
    async with await connect_api() as api:
        try:
            report = await api.forget_customer(customer_id)
        except UnknownCustomer as e:
            err.print(f"error: {e}", markup=False, highlight=False)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except CustomerStillActive as e:
            err.print(f"refused: {e}", markup=False, highlight=False)
            raise typer.Exit(EXIT_REFUSED) from None
    if as_json:
        print_json(report)
        return
    say = lambda text: out.print(text, markup=False, highlight=False)  # noqa: E731
    say(f"customer {customer_id} forgotten at {report.erased_at:%Y-%m-%d %H:%M:%S} UTC")
    say(
        f"  {report.keys_destroyed} data key(s) destroyed: the histories of {len(report.workflows)} workflow(s) "
        "can no longer be read"
    )
    if report.histories_deleted:
        say(
            f"  {len(report.histories_deleted)} plaintext history(ies) from before encryption deleted: "
            + ", ".join(report.histories_deleted)
        )
    say(
        f"  redacted: {report.messages_redacted} message(s), {report.signals_redacted} order signal(s), "
        f"{report.returns_redacted} RMA note(s), {report.labels_unlinked} label link(s)"
    )
    say("not erased here:")
    for line in report.kept:
        say(f"  - {line}")
