"""Label records on a real SQLite file."""

from __future__ import annotations

import pytest

from common.db.errors import StoreError
from common.shipping.contracts import LabelNotFound
from common.store import Store

# ---------------------------------------------------------------------------------------------------------
# Shipments


async def test_shipment_records(shop: Store) -> None:
    key = "label:ORD-1:1"
    assert await shop.labels.get(key) is None
    created = await shop.labels.record_carrier_shipment(key, "ORD-1", "shp_1")
    assert (created.status, created.carrier_shipment_id, created.tracking_number) == (
        "created",
        "shp_1",
        None,
    )
    # A concurrent/retried attempt that created another carrier shipment gets the first one back.
    assert await shop.labels.record_carrier_shipment(key, "ORD-1", "shp_2") == created

    label = await shop.labels.mark_purchased(
        key,
        carrier="SandboxPost",
        service="Ground",
        rate_cents=795,
        tracking_number="SP123",
        label_url="http://labels/1.pdf",
        tracking_url="http://track/SP123",
    )
    assert (label.status, label.carrier, label.service, label.rate_cents, label.tracking_number) == (
        "purchased",
        "SandboxPost",
        "Ground",
        795,
        "SP123",
    )
    assert label.carrier_shipment_id == "shp_1" and label.created_at == created.created_at
    assert await shop.labels.get(key) == label
    await shop.labels.record_carrier_shipment("label:ORD-1:2", "ORD-1", "shp_3")
    await shop.labels.record_carrier_shipment("label:ORD-2:1", "ORD-2", "shp_4")
    assert [s.key for s in await shop.labels.for_order("ORD-1")] == [key, "label:ORD-1:2"]

    voided = await shop.labels.mark_voided(key)
    assert voided.status == "voided" and (await shop.labels.mark_voided(key)).status == "voided"
    with pytest.raises(StoreError, match="voided"):
        await shop.labels.mark_purchased(
            key, carrier="c", service="s", rate_cents=1, tracking_number="t", label_url="l", tracking_url="u"
        )
    with pytest.raises(LabelNotFound):
        await shop.labels.mark_purchased(
            "label:X:1",
            carrier="c",
            service="s",
            rate_cents=1,
            tracking_number="t",
            label_url="l",
            tracking_url="u",
        )
    with pytest.raises(LabelNotFound):
        await shop.labels.mark_voided("label:X:1")
