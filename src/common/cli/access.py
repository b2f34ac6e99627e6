"""`fulfill api-key ...`: the HTTP API's keys. Database only."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from common.access.contracts import Scope
from common.cli._base import err, out, print_json, run_async
from common.cli._help import CliApp
from common.cli._output import key, stamp, table
from common.cli.inventory import open_store

api_key_app = CliApp(help="API keys for the HTTP API: create, list, revoke.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SCOPES = ", ".join(s.value for s in Scope)


@api_key_app.command("create")
@run_async
async def api_key_create(
    name: Annotated[str, typer.Option(help="Who uses it (shown in orders' timelines), e.g. storefront.")],
    scope: Annotated[list[str], typer.Option(help=f"What it may do, one or more of: {SCOPES}.")],
) -> None:
    """Create a key and print it once: only its hash is stored.

    The key alone goes to standard output (KEY=$(fulfill api-key create ...)); the rest to standard error."""
    scopes = [part for value in scope for part in value.split(",")]
    async with open_store() as store:
        created = await store.api_keys.create(name, scopes)
    print(created.secret, flush=True)
    granted = ", ".join(sorted(s.value for s in created.key.scopes))
    err.print(
        f"created API key [bold]{escape(created.key.name)}[/] (id {created.key.key_id}, scopes {granted}); "
        "it is shown only now: keep it in a secret store",
        highlight=False,
    )
    if sys.stdout.isatty():
        err.print("use it as: Authorization: Bearer <key>", highlight=False)


@api_key_app.command("list")
@run_async
async def api_key_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Also the revoked keys.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The keys (never their secrets): id, name, scopes, when created and revoked."""
    async with open_store() as store:
        keys = await store.api_keys.list(include_revoked=revoked)
    if as_json:
        print_json(
            [
                {
                    "key_id": k.key_id,
                    "name": k.name,
                    "scopes": sorted(s.value for s in k.scopes),
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                }
                for k in keys
            ]
        )
        return
    shown = table(key("id"), key("name"), "scopes", "created", "revoked")
    for k in keys:
        revoked_at = stamp(k.revoked_at) if k.revoked_at else ""
        shown.add_row(k.key_id, k.name, ", ".join(sorted(s.value for s in k.scopes)), stamp(k.created_at), revoked_at)
    out.print(shown)


@api_key_app.command("revoke")
@run_async
async def api_key_revoke(name_or_id: Annotated[str, typer.Argument(help="The key's name or id.")]) -> None:
    """Revoke a key for good: its next request is refused (401)."""
    async with open_store() as store:
        revoked = await store.api_keys.revoke(name_or_id)
    out.print(f"revoked API key {escape(revoked.name)} (id {revoked.key_id})", highlight=False)
