"""The developer's commands of `fulfill`: `fulfill dev up|outage|outages` (the embedded stack and outages of its
sandbox services) and `fulfill outbox` (what the sandbox's customer inboxes received).

They need the sandbox package, which development installs have and the production image does not; so they are
not in common.cli but added by the `fulfill` entry point (workers/cli.py) where the sandbox is installed."""

from __future__ import annotations

import typer

from workers.devcli.dev import dev_app
from workers.devcli.outbox import outbox


def add_dev_commands(app: typer.Typer) -> None:
    app.add_typer(dev_app, name="dev")
    app.command("outbox")(outbox)
