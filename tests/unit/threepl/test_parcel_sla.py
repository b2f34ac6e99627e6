"""parcel_view: a 3PL parcel's due dates and whether the 3PL is late with it, state by state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.api.threepl import parcel_view
from common.threepl.contracts import ThreePLParcel, ThreePLState

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACCEPT, SHIP = timedelta(hours=4), timedelta(hours=48)


def parcel(state: ThreePLState, accepted_at: datetime | None = None, key: str = "ORD-9~2") -> ThreePLParcel:
    return ThreePLParcel(
        f"3pl:{key}:1", key, 1, "shipbob", "SHIPBOB-1", "1001", state, None, None, None, None, None,
        T0, accepted_at, None, None, None, T0,
    )  # fmt: skip


def view(p: ThreePLParcel, after: timedelta) -> tuple[bool, datetime, datetime]:
    v = parcel_view(p, accept_sla=ACCEPT, ship_sla=SHIP, now=T0 + after)
    return v.late, v.accept_due_at, v.ship_due_at


def test_the_order_id_is_the_customers_without_the_placement() -> None:
    v = parcel_view(parcel(ThreePLState.SUBMITTED), accept_sla=ACCEPT, ship_sla=SHIP, now=T0)
    assert (v.order_id, v.order_key) == ("ORD-9", "ORD-9~2")


def test_submitted_is_late_past_the_accept_sla() -> None:
    assert view(parcel(ThreePLState.SUBMITTED), ACCEPT) == (False, T0 + ACCEPT, T0 + SHIP)
    assert view(parcel(ThreePLState.SUBMITTED), ACCEPT + timedelta(seconds=1))[0] is True


@pytest.mark.parametrize("state", [ThreePLState.ACCEPTED, ThreePLState.ON_HOLD])
def test_accepted_or_held_is_late_past_the_ship_sla_from_acceptance(state: ThreePLState) -> None:
    accepted = T0 + timedelta(hours=10)  # accepted late itself: the ship SLA counts from then
    late, accept_due, ship_due = view(parcel(state, accepted), timedelta(hours=50))
    assert (late, accept_due, ship_due) == (False, T0 + ACCEPT, accepted + SHIP)
    assert view(parcel(state, accepted), timedelta(hours=58, seconds=1))[0] is True
    assert view(parcel(state), SHIP + timedelta(seconds=1))[0] is True  # never said accepted: from submission


@pytest.mark.parametrize(
    "state", [ThreePLState.SHIPPED, ThreePLState.DELIVERED, ThreePLState.REJECTED, ThreePLState.CANCELLED]
)
def test_a_parcel_the_3pl_is_done_with_is_never_late(state: ThreePLState) -> None:
    assert view(parcel(state), timedelta(days=30))[0] is False
