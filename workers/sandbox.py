"""The sandbox servers (SMTP, Twilio Messages API, carrier, Stripe refunds, a ShipBob-shaped 3PL) in the foreground
until SIGINT/SIGTERM.

Run with `python -m workers.sandbox` (settings from FULFILL_* environment variables; data in
`<var_dir>/sandbox.db`, kept across restarts). Outages of each service are switched at run time over HTTP
(`/_sandbox/outages` on the SMS/outbox port; `fulfill dev outage`).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from common.config import Settings, get_settings
from common.logs import configure_logging
from sandbox import SandboxServers

log = logging.getLogger("fulfill.sandbox")


async def serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with SandboxServers(settings) as sandbox:
        log.info("sandbox listening: %s", sandbox.describe())
        await stop.wait()
        log.info("sandbox stopping")


def main() -> None:
    configure_logging()
    asyncio.run(serve(get_settings()))


if __name__ == "__main__":
    main()
