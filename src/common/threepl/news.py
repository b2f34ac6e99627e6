"""What a 3PL's view of an order means for our parcel: `news_of`, the one mapping of a `ThreePLOrder` onto a
`ThreePLUpdate`. The submission's answer, a verified webhook, the order's poll and the reconciliation pull all
go through it, so the same 3PL state is the same news whichever way it came."""

from __future__ import annotations

from common.integrations.threepl_api import CancelAnswer, ThreePLDetail, ThreePLOrder, ThreePLShipment, ThreePLStatus
from common.threepl.contracts import ThreePLState, ThreePLUpdate, parse_reference_id

# A 3PL order that exists has been acknowledged: SUBMITTED is never news from the 3PL itself.
_STATES = {
    ThreePLStatus.PROCESSING: ThreePLState.ACCEPTED,
    ThreePLStatus.ON_HOLD: ThreePLState.ON_HOLD,
    ThreePLStatus.EXCEPTION: ThreePLState.REJECTED,  # out of stock, unknown SKU...: it will not fulfill it
    ThreePLStatus.CANCELLED: ThreePLState.CANCELLED,
}
# Only these states carry the 3PL's words; an accepted or shipped parcel has no reason to keep.
_WITH_REASON = frozenset({ThreePLState.ON_HOLD, ThreePLState.REJECTED, ThreePLState.CANCELLED})


def news_of(order: ThreePLOrder, *, source: str) -> ThreePLUpdate | None:
    """The parcel's news in `order` (as the 3PL has it now), None when its reference is not one of ours (an
    order placed at the 3PL by hand). `source`: submit, webhook, poll or reconcile."""
    parsed = parse_reference_id(order.reference_id)
    if parsed is None:
        return None
    _, shipment_no = parsed
    if order.status == ThreePLStatus.COMPLETED:
        state = ThreePLState.DELIVERED if order.detail == ThreePLDetail.DELIVERED else ThreePLState.SHIPPED
    else:
        state = _STATES[order.status]
    tracked = _tracked_shipment(order) if state in (ThreePLState.SHIPPED, ThreePLState.DELIVERED) else None
    return ThreePLUpdate(
        reference_id=order.reference_id,
        shipment_no=shipment_no,
        state=state,
        reason=_reason(order) if state in _WITH_REASON else None,
        carrier=tracked.carrier if tracked else None,
        service=tracked.service if tracked else None,
        tracking_number=tracked.tracking_number if tracked else None,
        tracking_url=tracked.tracking_url if tracked else None,
        changed_at=order.updated_at,
        source=source,
    )


def _tracked_shipment(order: ThreePLOrder) -> ThreePLShipment | None:
    return next((s for s in order.shipments if s.tracking_number), None)


def _reason(order: ThreePLOrder) -> str | None:
    """The 3PL's words, else the kind of detail it named (so a hold or refusal always says something)."""
    if order.reason:
        return order.reason
    return order.detail.value.replace("_", " ") if order.detail is not None else None


def cancel_news(
    reference_id: str, shipment_no: int, answer: CancelAnswer, *, reason: str, source: str
) -> ThreePLUpdate | None:
    """What a 3PL's answer to our cancel request means for the parcel: CANCELLED (with `reason`) when it
    accepted, where it went when it refused because the parcel left, None when it refused for another reason
    (ask again later)."""
    if answer.accepted:
        return ThreePLUpdate(
            reference_id=reference_id,
            shipment_no=shipment_no,
            state=ThreePLState.CANCELLED,
            reason=reason,
            changed_at=answer.order.updated_at if answer.order else None,
            source=source,
        )
    news = news_of(answer.order, source=source) if answer.order is not None else None
    return news if news is not None and news.state in (ThreePLState.SHIPPED, ThreePLState.DELIVERED) else None
