"""Webhook delivery as providers do it, shared by the sandbox servers that send webhooks (the carrier's EasyPost
Events, the 3PL's Standard Webhooks): at least once, each event retried with backoff while the receiver does
not answer 2xx, one subject's events one after the other (so in order), and only to this machine. A sender says
how its events' bodies and headers look; the test controls every sender has (drop the next N events, send the
next N twice) are applied here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(kw_only=True)
class Delivery:
    """What became of one event's delivery: pending, delivered, failed (retries exhausted), dropped (test
    control), disabled (webhooks off or no URL), refused (a URL off this machine) or held (waiting to be sent
    in another order, a test control)."""

    url: str | None
    delivery: str = "pending"
    attempts: int = 0
    deliveries: int = 0  # successful posts: 2 for a duplicated event
    last_error: str | None = None
    copies: int = 1


class DeliveryControls(Protocol):
    drop_next: int
    duplicate_next: int
    retry_delays: list[float]


D = TypeVar("D", bound=Delivery)


class WebhookSender(Generic[D]):
    """Delivers events of type D; a subclass sets `config` and says what an event looks like on the wire."""

    config: DeliveryControls

    def __init__(self, kind: str, log: logging.Logger, local_hosts: frozenset[str] = LOCAL_HOSTS) -> None:
        self._kind = kind  # "carrier", "3pl": for the log
        self._log = log
        self._local_hosts = local_hosts
        self._chains: dict[str, asyncio.Task[None]] = {}  # subject (a tracker, an order) -> its last delivery
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    # -- what a sender says ----------------------------------------------------------------------------------

    def _event_id(self, sent: D) -> str:
        raise NotImplementedError

    def _body(self, sent: D) -> bytes:
        raise NotImplementedError

    def _headers(self, sent: D) -> dict[str, str]:
        """This attempt's headers (a sender that signs each attempt anew makes them here)."""
        raise NotImplementedError

    # -- delivering ------------------------------------------------------------------------------------------

    def _admit(self, sent: D) -> bool:
        """Whether `sent` goes out; if not, its delivery says why. Applies the drop and duplicate controls."""
        cfg = self.config
        if sent.url is None:
            sent.delivery = "disabled"
        elif cfg.drop_next > 0:
            cfg.drop_next -= 1
            sent.delivery = "dropped"
        elif urlsplit(sent.url).hostname not in self._local_hosts:
            sent.delivery = "refused"
            self._log.info(
                "event %s not delivered to %s: the sandbox only calls this machine", self._event_id(sent), sent.url
            )
        else:
            if cfg.duplicate_next > 0:
                cfg.duplicate_next -= 1
                sent.copies = 2
            return True
        return False

    def _chain(self, subject: str, sent: D) -> None:
        """Deliver after the subject's earlier events, so a receiver sees them in order."""
        before = self._chains.get(subject)
        task = asyncio.get_running_loop().create_task(self._deliver_after(before, sent))
        self._chains[subject] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._chains.get(subject) is done:
                del self._chains[subject]

        task.add_done_callback(forget)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_after(self, before: asyncio.Task[None] | None, sent: D) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(before)
        await self._deliver_all([sent])

    async def _deliver_all(self, batch: list[D]) -> None:
        for sent in batch:
            for _ in range(sent.copies):
                await self._deliver(sent)

    async def _deliver(self, sent: D) -> None:
        assert sent.url is not None
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        body = self._body(sent)
        for attempt, delay in enumerate([0.0, *self.config.retry_delays], start=1):
            await asyncio.sleep(delay)
            sent.attempts += 1
            try:
                async with self._session.post(sent.url, data=body, headers=self._headers(sent)) as resp:
                    await resp.read()
                    if resp.status < 300:
                        sent.deliveries += 1
                        sent.delivery, sent.last_error = "delivered", None
                        self._failing_now(False, sent.url, "")
                        return
                    sent.last_error = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as err:
                sent.last_error = f"{type(err).__name__}: {err}"
            self._failing_now(True, sent.url, sent.last_error)
            self._log.debug(
                "event %s attempt %d to %s failed: %s", self._event_id(sent), attempt, sent.url, sent.last_error
            )
        if sent.delivery != "delivered":
            sent.delivery = "failed"

    def _failing_now(self, failing: bool, url: str, error: str) -> None:
        """Say it once when a receiver starts failing and once when it works again, not at every attempt."""
        if failing and not self._failing:
            self._log.info("%s webhooks to %s failing (%s); retrying quietly", self._kind, url, error)
        elif not failing and self._failing:
            self._log.info("%s webhooks to %s delivered again", self._kind, url)
        self._failing = failing

    async def _stop_deliveries(self) -> None:
        tasks = [*self._chains.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._chains.clear()
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
