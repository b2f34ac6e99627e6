"""FulfillmentApi's 3PL desk (mixed into FulfillmentApi): the 3PLs' webhooks (an inventory one starts a stock
sync), and the parcels at 3PLs with their SLAs for ops."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from common.api.threepl_events import Outcome, ThreePLEventReceipt, receive_threepl_event
from common.api.threepl_inventory import ThreePLInventoryApi
from common.config import Settings
from common.logs import describe_error
from common.models import PLACEMENT_MARK
from common.order_signals import deliver_order_signals
from common.store import Store
from common.threepl.contracts import ThreePLParcel, ThreePLState

log = logging.getLogger("fulfill.api")

# The states in which a parcel still waits for the 3PL, and so can be late: to accept it, or to ship it.
_AWAITING_ACCEPT = frozenset({ThreePLState.SUBMITTED})
_AWAITING_SHIP = frozenset({ThreePLState.ACCEPTED, ThreePLState.ON_HOLD})


@dataclass(frozen=True)
class ThreePLParcelView:
    """A parcel at a 3PL, for ops: where it stands and whether the 3PL is late with it."""

    reference_id: str
    order_id: str  # the order id the customer knows
    order_key: str  # the key of the order's rows (`order_id~n` for a re-placement)
    shipment_no: int
    provider: str
    warehouse: str
    state: ThreePLState
    reason: str | None
    carrier: str | None
    tracking_number: str | None
    submitted_at: datetime
    accepted_at: datetime | None
    shipped_at: datetime | None
    delivered_at: datetime | None
    accept_due_at: datetime
    ship_due_at: datetime
    late: bool


def parcel_view(
    parcel: ThreePLParcel, *, accept_sla: timedelta, ship_sla: timedelta, now: datetime
) -> ThreePLParcelView:
    """The parcel with its due dates: accepted by submitted_at + accept SLA, shipped by (accepted_at, else
    submitted_at) + ship SLA; late when now is past the one its state waits for."""
    accept_due = parcel.submitted_at + accept_sla
    ship_due = (parcel.accepted_at or parcel.submitted_at) + ship_sla
    late = (parcel.state in _AWAITING_ACCEPT and now > accept_due) or (
        parcel.state in _AWAITING_SHIP and now > ship_due
    )
    return ThreePLParcelView(
        reference_id=parcel.reference_id,
        order_id=parcel.order_id.split(PLACEMENT_MARK, 1)[0],
        order_key=parcel.order_id,
        shipment_no=parcel.shipment_no,
        provider=parcel.provider,
        warehouse=parcel.warehouse,
        state=parcel.state,
        reason=parcel.reason,
        carrier=parcel.carrier,
        tracking_number=parcel.tracking_number,
        submitted_at=parcel.submitted_at,
        accepted_at=parcel.accepted_at,
        shipped_at=parcel.shipped_at,
        delivered_at=parcel.delivered_at,
        accept_due_at=accept_due,
        ship_due_at=ship_due,
        late=late,
    )


class ThreePLDesk(ThreePLInventoryApi):
    """FulfillmentApi's 3PL methods: webhooks, the parcels' listing, and (ThreePLInventoryApi) inventory sync."""

    client: Client
    store: Store
    settings: Settings

    async def threepl_event(self, provider: str, body: bytes, headers: Mapping[str, str]) -> ThreePLEventReceipt:
        """A 3PL's webhook: verified by its adapter, recorded once, and signalled to the order whose parcel it
        moves (now, or by the relay if the engine is away). NotFound for an unknown provider, WebhookRefused for
        a webhook not signed by it: nothing changes."""
        receipt = await receive_threepl_event(self.store, self.settings, provider, body, headers)
        if receipt.outcome == Outcome.IGNORED and receipt.topic.startswith("inventory"):
            await self.threepl_inventory_changed(provider)  # one sync a minute, however many such webhooks come
        if receipt.signal_id is not None:
            try:
                await deliver_order_signals(self.client, self.store, ids=[receipt.signal_id])
            except Exception as err:  # recorded already: the relay delivers it
                log.info("3pl event %s: told to the relay (%s)", receipt.event_id, describe_error(err))
        return receipt

    async def threepl_parcels(
        self,
        *,
        provider: str | None = None,
        states: Sequence[ThreePLState] | None = None,
        late_only: bool = False,
        limit: int = 200,
        now: datetime | None = None,
    ) -> list[ThreePLParcelView]:
        """Parcels at 3PLs, newest submission first, with their SLAs (this process's FULFILL_THREEPL_ACCEPT_SLA
        and FULFILL_THREEPL_SHIP_SLA); `late_only`: those the 3PL is late with."""
        if not 1 <= limit <= 1000:
            raise ValueError(f"limit must be 1 to 1000, got {limit}")
        if late_only:  # only a parcel still waiting for the 3PL can be late: the limit counts those alone
            states = [s for s in (states or ThreePLState) if s in _AWAITING_ACCEPT | _AWAITING_SHIP]
            if not states:
                return []
        parcels = await self.store.threepl.parcels(provider=provider, states=states, limit=limit)
        accept = timedelta(seconds=self.settings.threepl_accept_sla)
        ship = timedelta(seconds=self.settings.threepl_ship_sla)
        at = now or datetime.now(UTC)
        views = [parcel_view(p, accept_sla=accept, ship_sla=ship, now=at) for p in parcels]
        return [v for v in views if v.late] if late_only else views
