"""`fulfill keys ...`: the master keys of payload encryption (common.crypto.keys) and their rotation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from common.cli._base import connect_api, out, print_json, run_async
from common.cli._help import CliApp
from common.config import get_settings
from common.crypto.keys import KeyProblem, KeyRing, key_file, rotate_key_file
from common.privacy import customer_keys

keys_app = CliApp(help="Payload encryption keys: list, rotate, rewrap.", no_args_is_help=True)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", help="The key file (default: FULFILL_CODEC_KEY_FILE, else <var_dir>/codec-keys.json)."),
]


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False)


@keys_app.command("list")
@run_async
async def keys_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The master keys, newest (the one new payloads use) first, and how many customers' data keys each wraps.
    Never the secrets."""
    ring = KeyRing.load(get_settings())
    async with await connect_api() as api:
        counts = await (await customer_keys(api.client)).wrapped_by_counts()
    rows = [
        {"id": k.id, "created_at": k.created_at, "newest": i == 0, "data_keys_wrapped": counts.get(k.id, 0)}
        for i, k in enumerate(ring.keys)
    ]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        mark = "  (newest: encrypts new payloads)" if row["newest"] else ""
        _say(f"{row['id']}  created {row['created_at'] or '?'}  wraps {row['data_keys_wrapped']} data key(s){mark}")


@keys_app.command("rotate")
def keys_rotate(file: FileOption = None) -> None:
    """Add a new newest key to the key file (created if missing). The older keys stay: they still decrypt the
    payloads and data keys they encrypted. Restart the processes for them to encrypt with it (a process meeting
    a key it does not know reads the file again). Then `fulfill keys rewrap`."""
    settings = get_settings()
    if settings.codec_keys and file is None:
        raise typer.BadParameter("the keys come from FULFILL_CODEC_KEYS: add a key there (id:base64, first)")
    path = file or key_file(settings)
    try:
        key = rotate_key_file(path)
    except KeyProblem as e:
        raise typer.BadParameter(str(e)) from None
    _say(f"added key {key.id} to {path}: new payloads use it once the processes restart")


@keys_app.command("rewrap")
@run_async
async def keys_rewrap() -> None:
    """Wrap every customer's data key under the newest master key, so an older key wraps nothing (see
    `fulfill keys list`). Payloads already in histories stay under the key they were written with: retire an
    older key only once the namespace's retention has passed since it stopped being the newest."""
    async with await connect_api() as api:
        done = await (await customer_keys(api.client)).rewrap()
    _say(f"rewrapped {done} data key(s) under the newest key")
