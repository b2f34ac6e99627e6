"""news_of: each 3PL status of an order of ours as the parcel's news, and nothing for an order not ours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.integrations.threepl_api import ThreePLDetail, ThreePLOrder, ThreePLShipment, ThreePLStatus
from common.threepl.contracts import ThreePLState, reference_id
from common.threepl.news import news_of

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def order(
    status: ThreePLStatus,
    detail: ThreePLDetail | None = None,
    *,
    reason: str | None = None,
    shipments: list[ThreePLShipment] | None = None,
    reference: str | None = None,
) -> ThreePLOrder:
    return ThreePLOrder(
        provider_id="1001",
        reference_id=reference or reference_id("ORD-7~2", 3),
        status=status,
        detail=detail,
        reason=reason,
        shipments=shipments or [],
        updated_at=AT,
    )


def shipment(number: str | None, carrier: str = "SandboxPost") -> ThreePLShipment:
    return ThreePLShipment(
        provider_id="801001",
        status=ThreePLStatus.COMPLETED,
        carrier=carrier,
        service="Ground",
        tracking_number=number,
        tracking_url=f"https://track.example/{number}" if number else None,
    )


def test_processing_is_accepted_with_the_reference_and_the_3pl_time() -> None:
    news = news_of(order(ThreePLStatus.PROCESSING, ThreePLDetail.PICKED), source="poll")
    assert news is not None
    assert (news.reference_id, news.shipment_no, news.state) == ("3pl:ORD-7~2:3", 3, ThreePLState.ACCEPTED)
    assert (news.reason, news.tracking_number, news.changed_at, news.source) == (None, None, AT, "poll")


def test_on_hold_keeps_the_3pls_reason_or_names_the_detail() -> None:
    held = news_of(order(ThreePLStatus.ON_HOLD, ThreePLDetail.INVALID_ADDRESS, reason="Invalid Address"), source="x")
    assert held is not None and (held.state, held.reason) == (ThreePLState.ON_HOLD, "Invalid Address")
    bare = news_of(order(ThreePLStatus.ON_HOLD, ThreePLDetail.MANUAL_HOLD), source="x")
    assert bare is not None and bare.reason == "manual hold"


@pytest.mark.parametrize("detail", [ThreePLDetail.OUT_OF_STOCK, ThreePLDetail.UNKNOWN_SKU])
def test_an_exception_is_a_rejection_with_its_reason(detail: ThreePLDetail) -> None:
    news = news_of(order(ThreePLStatus.EXCEPTION, detail, reason="No Stock On Hand For Sku"), source="webhook")
    assert news is not None and (news.state, news.reason) == (ThreePLState.REJECTED, "No Stock On Hand For Sku")


def test_completed_is_shipped_with_the_first_tracked_shipment() -> None:
    boxes = [shipment(None, carrier="Nobody"), shipment("SP123"), shipment("SP456", carrier="Other")]
    news = news_of(order(ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT, shipments=boxes), source="webhook")
    assert news is not None and news.state == ThreePLState.SHIPPED
    assert (news.carrier, news.service, news.tracking_number) == ("SandboxPost", "Ground", "SP123")
    assert news.tracking_url == "https://track.example/SP123" and news.reason is None


def test_completed_and_delivered_is_delivered() -> None:
    news = news_of(order(ThreePLStatus.COMPLETED, ThreePLDetail.DELIVERED, shipments=[shipment("SP1")]), source="x")
    assert news is not None and (news.state, news.tracking_number) == (ThreePLState.DELIVERED, "SP1")


def test_completed_without_a_tracking_number_is_shipped_untracked() -> None:
    news = news_of(order(ThreePLStatus.COMPLETED, ThreePLDetail.LABELED), source="x")
    assert news is not None and news.state == ThreePLState.SHIPPED and news.tracking_number is None


def test_cancelled_is_cancelled() -> None:
    news = news_of(order(ThreePLStatus.CANCELLED, reason="Cancelled by merchant"), source="x")
    assert news is not None and (news.state, news.reason) == (ThreePLState.CANCELLED, "Cancelled by merchant")


@pytest.mark.parametrize("reference", ["ORD-1", "3pl:ORD-1", "3pl:ORD-1:x", "manual:ORD-1:1"])
def test_an_order_not_ours_is_no_news(reference: str) -> None:
    assert news_of(order(ThreePLStatus.PROCESSING, reference=reference), source="x") is None


def test_every_status_has_a_state() -> None:
    for status in ThreePLStatus:
        assert news_of(order(status), source="x") is not None
