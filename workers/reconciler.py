"""Background tasks of every worker process that keep the books in line with Temporal.

The order-signal relay delivers what the order-signal outbox still holds (common/order_signals.py), every
`FULFILL_ORDER_SIGNAL_RELAY_INTERVAL` seconds. The API delivers the messages it writes at once; this catches
the ones it could not, e.g. a stock count recorded by the CLI while the engine was down. Several worker
processes each run one: rows are claimed with a lease (OrderSignalStore.claim_order_signals), so two relays do not
deliver the same row while both are alive, and one workflow's rows still go in order. After a relay dies
mid-delivery its rows are delivered again, which is harmless (see common/order_signals.py).

The fallback relay starts the email fallbacks of undelivered SMS still pending (common/api/sms.py): the HTTP API
starts each one when Twilio's status callback comes, and marks it pending first in the same statement that
records the failure, so one it could not start (Temporal away, the API stopped) is started here, on the order-
signal relay's interval. Starting one twice is harmless: its workflow id is never reused.

The sweeper gives back what orders closed without compensating still hold (a workflow terminated in the Web
UI or with `temporal workflow terminate` runs no code of its own): every `FULFILL_SWEEP_INTERVAL` seconds it
lists the order workflows closed since its last round and, for each whose current run is closed and that
still holds stock, a pick task or a place in the restock queue, undoes it the way a cancel would, asking the
carrier first: a labelled parcel the carrier has is shipped (its stock committed), any other label is voided; a
parcel at a 3PL not shipped yet is cancelled there (recorded shipped if the 3PL refuses because it left).
Several sweepers at once are harmless: every step is idempotent.

The 3PL reconciler brings what a lost 3PL webhook did not: every `FULFILL_THREEPL_RECONCILE_INTERVAL` seconds it
asks each 3PL with parcels not in a final state for the orders it changed since the newest change its last pull
saw (less an overlap), and records each one's news as the webhook would have (forward only, with the order's
signal in the outbox). So the end state is the same whether webhooks came, were lost, repeated or reordered;
several reconcilers at once only repeat news, which changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.shipping import label_key, undo_label
from common.api.sms import start_pending_fallbacks
from common.config import Settings
from common.integrations.carrier_api import Carrier
from common.integrations.threepl_api import ThreePLError, ThreePLNotFound, ThreePLProvider
from common.integrations.threepl_providers import provider_for, threepl_providers
from common.logs import describe_error
from common.models import order_key, workflow_id_for
from common.order_signals import OUTBOX_ERROR_CHARS, DeliveryReport, deliver_order_signals
from common.shipping.contracts import LabelUndo
from common.store import Store
from common.threepl.contracts import ThreePLParcel, ThreePLState, ThreePLUpdate
from common.threepl.news import cancel_news, news_of

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
            report = DeliveryReport(error=describe_error(err, limit=OUTBOX_ERROR_CHARS))
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


class FallbackRelay:
    def __init__(self, client: Client, store: Store, settings: Settings) -> None:
        self._client = client
        self._store = store
        self._settings = settings

    async def round(self) -> list[str]:
        """Start the pending fallbacks; the SMS keys of those started. Never raises (but for cancellation)."""
        try:
            started = await start_pending_fallbacks(self._client, self._store, self._settings, limit=BATCH)
        except Exception as err:  # the database unreachable: the next round
            log.warning("email fallbacks of undelivered SMS: %s; next try later", describe_error(err))
            return []
        if started:
            log.info("started the email fallback of %d undelivered SMS", len(started))
        return started

    async def run(self, interval_s: float) -> None:
        while True:
            if len(await self.round()) < BATCH:
                await asyncio.sleep(interval_s)


# A 3PL's "changed since" listing may show a change a little after its time (replication, clocks): each pull
# starts this much before the newest change the last one saw. What it sees again is not news.
THREEPL_PULL_OVERLAP = timedelta(minutes=5)


class ThreePLReconciler:
    def __init__(
        self,
        client: Client,
        store: Store,
        providers: Mapping[str, ThreePLProvider],
        *,
        overlap: timedelta = THREEPL_PULL_OVERLAP,
    ) -> None:
        self._client = client
        self._store = store
        self._providers = providers
        self._overlap = overlap

    async def round(self) -> list[int]:
        """One pull of every 3PL; the outbox rows it wrote (delivered at once, else by the relay). Never raises
        (but for cancellation): a 3PL or the database away is one log line, and the next round tries again."""
        written: list[int] = []
        for name, provider in self._providers.items():
            try:
                written += await self._pull(name, provider)
            except Exception as err:
                log.warning("3pl %s: reconciliation left for the next round (%s)", name, describe_error(err))
        if written:
            try:
                await deliver_order_signals(self._client, self._store, ids=written)
            except Exception as err:  # recorded already: the relay delivers them
                log.info("3pl news: %d signal(s) left to the relay (%s)", len(written), describe_error(err))
        return written

    async def _pull(self, name: str, provider: ThreePLProvider) -> list[int]:
        """Only 3PLs with open parcels are asked; the first pull starts at the oldest open parcel's submission. The
        cursor moves only after every change seen was recorded, so a failure mid-way is pulled again."""
        oldest = await self._store.threepl.oldest_open_submission(name)
        if oldest is None:
            return []
        cursor = await self._store.threepl.orders_since(name)
        since = max(oldest, cursor) if cursor is not None else oldest
        written: list[int] = []
        newest: datetime | None = None
        for order in await provider.changes_since(since - self._overlap):
            news = news_of(order, source="reconcile")
            if news is not None and (signal_id := await self._store.threepl.signal_news(news)) is not None:
                written.append(signal_id)
            if order.updated_at is not None and (newest is None or order.updated_at > newest):
                newest = order.updated_at
        if newest is not None:
            await self._store.threepl.advance_orders_since(name, newest)
        if written:
            log.info("3pl %s: reconciliation found news of %d parcel(s)", name, len(written))
        return written


# Visibility is eventually consistent: each round looks back this much further than the last one started.
_VISIBILITY_MARGIN = timedelta(minutes=10)


# 3PL parcels a closed order may still have coming: the 3PL has not shipped them (as far as we know).
_THREEPL_UNSHIPPED = (ThreePLState.SUBMITTED, ThreePLState.ACCEPTED, ThreePLState.ON_HOLD)


class ClosedOrderSweeper:
    def __init__(
        self,
        client: Client,
        store: Store,
        carrier: Carrier,
        *,
        lookback_s: float,
        threepls: Mapping[str, ThreePLProvider] | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._carrier = carrier
        self._threepls = dict(threepls or {})
        self._since = datetime.now(UTC) - timedelta(seconds=lookback_s)

    async def round(self) -> list[str]:
        """One round: the orders it gave back stock, pick tasks or labels of. Never raises (but for
        cancellation): what it could not do now, the next round does."""
        started = datetime.now(UTC)
        swept: list[str] = []
        try:
            closed = set(await self._closed_orders(self._since))
            holding = await self._store.orders.holding_resources()
            unshipped = await self._store.threepl.parcels(states=_THREEPL_UNSHIPPED, limit=1000)
            holding = sorted({*holding, *(p.order_id for p in unshipped)})
        except Exception as err:
            log.warning("sweep of closed orders stopped (%s); the next round goes on", describe_error(err))
            return swept
        left = False
        for key in holding:
            order_id = workflow_id_for(key).removeprefix("order-")  # an order placed again keys its rows
            try:
                if order_id not in closed or await self._owned_by_a_running_order(order_id, key):
                    continue
                await sweep_threepl_parcels(self._store, self._threepls, key)
                await sweep_order(self._store, self._carrier, key)
                swept.append(key)
            except Exception as err:  # this order waits for the next round; the others go on now
                log.warning("sweep of closed order %s left for the next round (%s)", key, describe_error(err))
                left = True
        if not left:  # else the next round looks as far back again, for the orders left
            self._since = started - _VISIBILITY_MARGIN
        if swept:
            log.info("gave back what %d closed order(s) still held: %s", len(swept), ", ".join(swept))
        return swept

    async def _closed_orders(self, since: datetime) -> list[str]:
        query = (
            f'WorkflowType = "OrderWorkflow" AND ExecutionStatus != "Running" '
            f'AND CloseTime >= "{since.strftime("%Y-%m-%dT%H:%M:%SZ")}"'
        )
        return sorted({wf.id.removeprefix("order-") async for wf in self._client.list_workflows(query)})

    async def _owned_by_a_running_order(self, order_id: str, key: str) -> bool:
        """Whether the order's current run is running and these rows are its own (not those of an earlier
        placement that closed without giving them back)."""
        try:
            description = await self._client.get_workflow_handle(workflow_id_for(order_id)).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        if description.status != WorkflowExecutionStatus.RUNNING:
            return False
        return order_key(order_id, int(await description.memo_value("placement", default=1))) == key


async def sweep_order(store: Store, carrier: Carrier, order_id: str) -> None:
    """Give back what a closed order holds (`order_id`: the key of its rows), as a cancel would: each shipment
    whose stock is still held gets its label undone unless the carrier has the parcel (then that stock is
    committed: it left), then open pick tasks are cancelled and the rest is released (which also ends its
    wait in the restock queue)."""
    for record in await store.labels.for_order(order_id):
        if not record.key.startswith("label:") or record.status == "voided":
            continue  # return labels belong to their RMA's workflow
        shipment_no = int(record.key.rsplit(":", 1)[1])
        if await store.reservations.shipment_reservation_status(order_id, shipment_no) != "held":
            continue
        assert record.key == label_key(order_id, shipment_no)
        undo = await undo_label(store, carrier, record.key)
        if undo.outcome == LabelUndo.IN_USE:
            await store.reservations.commit_reservation(order_id, shipment_no=shipment_no)
    for task in await store.picks.for_order(order_id):
        if task.status == "open":
            await store.picks.cancel(task.id)
    await store.reservations.release(order_id, note="order closed without giving it back")


async def sweep_threepl_parcels(store: Store, threepls: dict[str, ThreePLProvider], order_id: str) -> None:
    """Ask each 3PL not to ship what a closed order (`order_id`: the key of its rows) has there unshipped, and
    record its answer: cancelled, or where the parcel is when it refused because the parcel left. The stock of a
    parcel that left is committed (sweep_order releases the rest). A refusal for another reason raises: the next
    round asks again."""
    for parcel in await store.threepl.for_order(order_id):
        state = parcel.state
        if state in _THREEPL_UNSHIPPED:
            news = await _cancel_at_3pl(provider_for(threepls, parcel.provider), parcel)
            await store.threepl.apply(news)
            state = news.state
        if state in (ThreePLState.SHIPPED, ThreePLState.DELIVERED):
            await store.reservations.commit_reservation(order_id, shipment_no=parcel.shipment_no)


async def _cancel_at_3pl(provider: ThreePLProvider, parcel: ThreePLParcel) -> ThreePLUpdate:
    ref, no = parcel.reference_id, parcel.shipment_no
    closed = "order closed without cancelling it"
    try:
        answer = await provider.request_cancel(ref)
    except ThreePLNotFound:  # it never reached the 3PL: nothing will ship
        return ThreePLUpdate(
            reference_id=ref, shipment_no=no, state=ThreePLState.CANCELLED, reason=closed, source="sweep"
        )
    news = cancel_news(ref, no, answer, reason=closed, source="sweep")
    if news is None:
        raise ThreePLError(f"3pl {ref}: cancel refused ({answer.reason or answer.status.value})")
    return news


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


@asynccontextmanager
async def running_fallback_relay(
    client: Client, store: Store, settings: Settings
) -> AsyncIterator[FallbackRelay | None]:
    """The fallback relay, on the order-signal relay's interval (None if that setting disables relays)."""
    if settings.order_signal_relay_interval <= 0:
        yield None
        return
    relay = FallbackRelay(client, store, settings)
    task = asyncio.create_task(relay.run(settings.order_signal_relay_interval), name="sms-fallback-relay")
    try:
        yield relay
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def running_sweeper(
    client: Client, store: Store, carrier: Carrier, settings: Settings
) -> AsyncIterator[ClosedOrderSweeper | None]:
    """The sweeper running in the background for the duration (None if the setting disables it)."""
    if settings.sweep_interval <= 0:
        yield None
        return
    threepls = threepl_providers(settings)
    sweeper = ClosedOrderSweeper(client, store, carrier, lookback_s=settings.sweep_lookback, threepls=threepls)

    async def sweep() -> None:
        while True:
            await asyncio.sleep(settings.sweep_interval)
            await sweeper.round()

    task = asyncio.create_task(sweep(), name="closed-order-sweeper")
    try:
        yield sweeper
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for provider in threepls.values():
            await provider.close()


@asynccontextmanager
async def running_threepl_reconciler(
    client: Client, store: Store, settings: Settings
) -> AsyncIterator[ThreePLReconciler | None]:
    """The 3PL reconciler, a round at start (news missed while no worker ran) and then every interval; None if
    the setting disables it."""
    if settings.threepl_reconcile_interval <= 0:
        yield None
        return
    providers = threepl_providers(settings)
    reconciler = ThreePLReconciler(client, store, providers)

    async def reconcile() -> None:
        while True:
            await reconciler.round()
            await asyncio.sleep(settings.threepl_reconcile_interval)

    task = asyncio.create_task(reconcile(), name="threepl-reconciler")
    try:
        yield reconciler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for provider in providers.values():
            await provider.close()
