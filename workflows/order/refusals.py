"""Whether an ops cancel or hold can still be honoured: the carrier is asked where each labelled parcel is, and
each 3PL where its parcel is, before the order accepts the request (validators cannot call activities)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import workflow

from workflows.steps import CARRIER

with workflow.unsafe.imports_passed_through():
    from activities.shipping import ShippingActivities
    from common.models import MOVED_TRACKING_STATUSES, OrderStatus, TrackingPollRequest, TrackingStatus
    from common.threepl.contracts import ThreePLState

if TYPE_CHECKING:
    from workflows.order.fulfilment import Fulfilment
    from workflows.order.parcel import Parcel

_LEFT_THE_3PL = frozenset({ThreePLState.SHIPPED, ThreePLState.DELIVERED})


def labelled(fulfilment: Fulfilment) -> list[Parcel]:
    return [
        p
        for p in fulfilment.parcels
        if p.view.outcome is None and p.view.status == OrderStatus.LABELED and not p.kept_by_the_carrier
    ]


async def refusal_by_the_carrier(fulfilment: Fulfilment, action: str) -> str | None:
    """Ask the carrier where each labelled parcel is (orders recorded before the patch trusted the last
    poll); a parcel it has moved is the answer to the request, and news for the parcel's tracking."""
    parcels = labelled(fulfilment)
    if not parcels or not fulfilment.labelled_parcels_ask_the_carrier():
        return None
    fulfilment.deciding = True  # the other parts wait at their next step meanwhile
    try:
        updates = await asyncio.gather(
            *(
                fulfilment.step(
                    ShippingActivities.check_tracking,
                    TrackingPollRequest(
                        tracking_number=p.view.tracking_number or "",
                        carrier=p.view.carrier or "",
                        last_status=TrackingStatus.PRE_TRANSIT,
                    ),
                    CARRIER,
                    f"ask the carrier where shipment {p.view.shipment_no} is",
                )
                for p in parcels
            )
        )
    finally:
        fulfilment.deciding = False
    moved = [(p, u) for p, u in zip(parcels, updates, strict=True) if u.status in MOVED_TRACKING_STATUSES]
    for parcel, update in moved:
        parcel.seen_by_check = update
    if not moved:
        return None
    where = ", ".join(f"{p.view.carrier} {p.view.tracking_number} is {u.status.value}" for p, u in moved)
    fulfilment.timeline.note(f"{action} refused: the carrier has the parcel ({where})")
    return f"cannot {action} order {fulfilment.order.order_id}: already shipped ({where}): request a return"


async def refusal_by_the_3pl(fulfilment: Fulfilment) -> str | None:
    """Ask each 3PL that has a parcel where it is: one that shipped is the answer to the cancel (and news for
    the parcel). The others are asked to cancel as each parcel is undone (parcel.py), and one that ships in
    between goes on, like a parcel the carrier picked up."""
    at_3pl = [p for p in fulfilment.parcels if p.with_3pl()]
    if not at_3pl:
        return None
    fulfilment.deciding = True
    try:
        updates = await asyncio.gather(*(p.at_3pl.check() for p in at_3pl))
    finally:
        fulfilment.deciding = False
    left = [(p, u) for p, u in zip(at_3pl, updates, strict=True) if u.state in _LEFT_THE_3PL]
    for parcel, update in zip(at_3pl, updates, strict=True):
        parcel.threepl_news.append(update)
    if not left:
        return None
    where = ", ".join(f"{p.provider} shipped {u.carrier} {u.tracking_number}" for p, u in left)
    fulfilment.timeline.note(f"cancel refused: {where}")
    return f"cannot cancel order {fulfilment.order.order_id}: already shipped ({where}): request a return"
