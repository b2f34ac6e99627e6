"""Simulated warehouse picker for demos and benchmarks: confirms open pick tasks after a delay."""

from __future__ import annotations

import asyncio
import logging

from common.api import FulfillmentApi
from common.errors import FulfillmentError
from common.production import refuse_unsafe_start

log = logging.getLogger("fulfill.picker")


async def run_picker(api: FulfillmentApi, delay_s: float, stop: asyncio.Event, poll_s: float = 0.5) -> None:
    # It confirms picks nobody made: never against a production configuration
    refuse_unsafe_start(api.settings, "simulated picker")
    while not stop.is_set():
        try:
            for task in await api.store.picks.open_tasks(older_than_s=delay_s):
                await api.confirm_pick(task.id)
                log.info("picked %s for order %s", task.id, task.order_id)
        except FulfillmentError as err:
            log.warning("picker: %s", err)
        except Exception:
            log.exception("picker: unexpected error; trying again")
        try:
            await asyncio.wait_for(stop.wait(), timeout=poll_s)
        except TimeoutError:
            pass
