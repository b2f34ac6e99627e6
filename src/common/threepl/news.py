"""A 3PL's order, as news for the parcel it fulfills: one mapping from the provider-neutral ThreePLOrder (a
submission's answer, a poll, a webhook, a reconciliation pull) to the ThreePLUpdate the order workflow applies."""

from __future__ import annotations

from common.integrations.threepl_api import ThreePLDetail, ThreePLOrder, ThreePLStatus
from common.threepl.contracts import ThreePLState, ThreePLUpdate, parse_reference_id


def news_of(order: ThreePLOrder, *, source: str) -> ThreePLUpdate | None:
    """The parcel's state as `order` shows it; None if the order is not one the engine submitted."""
    parsed = parse_reference_id(order.reference_id)
    if parsed is None:
        return None
    state = _state(order)
    shipped = next((s for s in order.shipments if s.tracking_number), None)
    return ThreePLUpdate(
        reference_id=order.reference_id,
        shipment_no=parsed[1],
        state=state,
        reason=order.reason if state in (ThreePLState.ON_HOLD, ThreePLState.REJECTED, ThreePLState.CANCELLED) else None,
        carrier=shipped.carrier if shipped else None,
        service=shipped.service if shipped else None,
        tracking_number=shipped.tracking_number if shipped else None,
        tracking_url=shipped.tracking_url if shipped else None,
        changed_at=order.updated_at,
        source=source,
    )


def _state(order: ThreePLOrder) -> ThreePLState:
    match order.status:
        case ThreePLStatus.PROCESSING:
            return ThreePLState.ACCEPTED
        case ThreePLStatus.ON_HOLD:
            return ThreePLState.ON_HOLD
        case ThreePLStatus.EXCEPTION:
            return ThreePLState.REJECTED
        case ThreePLStatus.CANCELLED:
            return ThreePLState.CANCELLED
        case ThreePLStatus.COMPLETED:
            if order.detail == ThreePLDetail.DELIVERED:
                return ThreePLState.DELIVERED
            return ThreePLState.SHIPPED
