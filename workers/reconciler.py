"""The order-signal relay: a background task of every worker process that delivers what the order-signal
outbox still holds (common/order_signals.py), every `FULFILL_ORDER_SIGNAL_RELAY_INTERVAL` seconds. The API
delivers the messages it writes at once; this catches the ones it could not, e.g. a stock count recorded by
the CLI while the engine was down.

Several worker processes each run one: rows are claimed with a lease (Store.claim_order_signals), so two
relays do not deliver the same row while both are alive, and one workflow's rows still go in order. After a
relay dies mid-delivery its rows are delivered again, which is harmless (see common/order_signals.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import Client

from common.config import Settings
from common.db import Store
from common.order_signals import DeliveryReport, deliver_order_signals

log = logging.getLogger("fulfill.reconciler")

BATCH = 100


class OrderSignalRelay:
    def __init__(self, client: Client, store: Store, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"the relay interval must be positive, got {interval_s!r}")
        self._client = client
        self._store = store
        self._interval_s = interval_s
        self.rounds = 0

    async def round(self) -> DeliveryReport:
        """One delivery round; logs one line if anything stays pending. Never raises (but for cancellation)."""
        try:
            report = await deliver_order_signals(self._client, self._store, limit=BATCH)
        except Exception as err:  # the database unreachable: the rows wait for the next round
            report = DeliveryReport(error=f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        self.rounds += 1
        if not report.ok:
            # Row ids and the error's kind only: no payloads, no customer data, no traceback.
            log.warning(
                "order signals: %d delivered, %d left pending (%s); next try in %g s",
                len(report.delivered),
                len(report.failed),
                (report.error or "")[:200],
                self._interval_s,
            )
        return report

    async def run(self) -> None:
        while True:
            report = await self.round()
            if report.ok and len(report.delivered) >= BATCH:
                continue  # a backlog: go on at once
            await asyncio.sleep(self._interval_s)


@asynccontextmanager
async def running_relay(client: Client, store: Store, settings: Settings) -> AsyncIterator[OrderSignalRelay | None]:
    """The relay running in the background for the duration (None if the setting disables it)."""
    if settings.order_signal_relay_interval <= 0:
        yield None
        return
    relay = OrderSignalRelay(client, store, settings.order_signal_relay_interval)
    task = asyncio.create_task(relay.run(), name="order-signal-relay")
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
