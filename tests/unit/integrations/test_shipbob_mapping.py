"""The ShipBob adapter's mappings: our order as ShipBob's create-order body, ShipBob's orders as our views (the
order's status from its shipments), and ShipBob's error answers as our errors, with the recipient blanked out."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from common.config import Settings, parse_stock_levels
from common.integrations.shipbob import threepl_error
from common.integrations.shipbob_views import UNREADABLE, order_body, parse_order, parse_stock, private_values
from common.integrations.threepl_api import (
    ThreePLDetail,
    ThreePLError,
    ThreePLNotFound,
    ThreePLRecipient,
    ThreePLRefused,
    ThreePLStatus,
    ThreePLTransientError,
)
from common.models import Address

RECIPIENT = ThreePLRecipient(
    address=Address(
        name="Zebedee Quartermaine",
        line1="77 Xylophone Crescent",
        line2="Flat 9",
        city="Wolverhampton",
        region="WMD",
        postal_code="WV1 1AA",
        country="GB",
    ),
    email="zebedee@example.com",
    phone="+447700900123",
)


def test_order_body_is_shipbobs_create_order() -> None:
    body = order_body(
        reference_id="3pl:ORD-1:1",
        order_number="ORD-1",
        lines=[("MUG-RED", 2), ("TEE-L", 1)],
        recipient=RECIPIENT,
        shipping_method="Standard",
        idempotency_key="3pl:ORD-1:1#1",
    )
    assert body == {
        "reference_id": "3pl:ORD-1:1",
        "order_number": "ORD-1",
        "shipping_method": "Standard",
        "type": "DTC",
        "recipient": {
            "name": "Zebedee Quartermaine",
            "address": {
                "address1": "77 Xylophone Crescent",
                "address2": "Flat 9",
                "city": "Wolverhampton",
                "state": "WMD",
                "country": "GB",
                "zip_code": "WV1 1AA",
            },
            "email": "zebedee@example.com",
            "phone_number": "+447700900123",
        },
        "products": [{"reference_id": "MUG-RED", "quantity": 2}, {"reference_id": "TEE-L", "quantity": 1}],
        "tags": [{"name": "idempotency_key", "value": "3pl:ORD-1:1#1"}],
    }
    bare = RECIPIENT.model_copy(
        update={
            "email": None,
            "phone": None,
            "address": RECIPIENT.address.model_copy(update={"line2": None, "region": None}),
        }
    )
    minimal = order_body(
        reference_id="r", order_number="n", lines=[("A", 1)], recipient=bare, shipping_method="S", idempotency_key="k"
    )
    assert minimal["recipient"] == {
        "name": "Zebedee Quartermaine",
        "address": {
            "address1": "77 Xylophone Crescent",
            "city": "Wolverhampton",
            "country": "GB",
            "zip_code": "WV1 1AA",
        },
    }


def shipment(sid: int, status: str, detail: str | None = None, description: str | None = None) -> dict[str, Any]:
    details = [{"id": 1, "name": detail, "description": description}] if detail else []
    return {"id": sid, "status": status, "status_details": details, "last_update_at": f"2026-01-0{sid}T00:00:00Z"}


def order(*shipments: dict[str, Any], status: str = "Processing") -> dict[str, Any]:
    return {"id": 7, "reference_id": "R", "status": status, "products": [], "shipments": list(shipments)}


@pytest.mark.parametrize(
    ("shipments", "expected"),
    [
        ([shipment(1, "Processing")], (ThreePLStatus.PROCESSING, None, None)),
        (
            [shipment(1, "Processing", "Labeled", "Label Generated")],
            (ThreePLStatus.PROCESSING, ThreePLDetail.LABELED, None),
        ),
        (
            [shipment(1, "OnHold", "InvalidAddress", "Invalid Address")],
            (ThreePLStatus.ON_HOLD, ThreePLDetail.INVALID_ADDRESS, "Invalid Address"),
        ),
        (
            [shipment(1, "On Hold", "ManualHold", None)],
            (ThreePLStatus.ON_HOLD, ThreePLDetail.MANUAL_HOLD, "ManualHold"),
        ),
        (
            [shipment(1, "Exception", "OutOfStock", "No Stock On Hand For Sku")],
            (ThreePLStatus.EXCEPTION, ThreePLDetail.OUT_OF_STOCK, "No Stock On Hand For Sku"),
        ),
        (
            [shipment(1, "Exception", "Bundle", "Shipment Contains Bundle Item")],
            (ThreePLStatus.EXCEPTION, ThreePLDetail.OTHER, "Shipment Contains Bundle Item"),
        ),
        ([shipment(1, "Completed", "Delivered")], (ThreePLStatus.COMPLETED, ThreePLDetail.DELIVERED, None)),
        ([shipment(1, "Cancelled")], (ThreePLStatus.CANCELLED, None, None)),
        # Several shipments: a cancelled one does not count while another lives; exception before hold before
        # processing; completed once every live one left, delivered once all are
        (
            [shipment(1, "Cancelled"), shipment(2, "Completed", "InTransit")],
            (ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT, None),
        ),
        ([shipment(1, "Completed", "Delivered"), shipment(2, "Processing")], (ThreePLStatus.PROCESSING, None, None)),
        (
            [shipment(1, "OnHold", "InvalidAddress", "a"), shipment(2, "Exception", "OutOfStock", "b")],
            (ThreePLStatus.EXCEPTION, ThreePLDetail.OUT_OF_STOCK, "b"),
        ),
        (
            [shipment(1, "Completed", "Delivered"), shipment(2, "Completed", "InTransit")],
            (ThreePLStatus.COMPLETED, ThreePLDetail.IN_TRANSIT, None),
        ),
        (
            [shipment(1, "Completed", "Delivered"), shipment(2, "Completed", "Delivered")],
            (ThreePLStatus.COMPLETED, ThreePLDetail.DELIVERED, None),
        ),
        ([shipment(1, "SomethingNew")], (ThreePLStatus.PROCESSING, None, None)),
    ],
)
def test_the_order_status_comes_from_its_shipments(
    shipments: list[dict[str, Any]], expected: tuple[ThreePLStatus, ThreePLDetail | None, str | None]
) -> None:
    view = parse_order(order(*shipments))
    assert (view.status, view.detail, view.reason) == expected
    assert view.updated_at is not None and view.updated_at.day == len(shipments)  # the latest shipment change


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Fulfilled", ThreePLStatus.COMPLETED),
        ("Cancelled", ThreePLStatus.CANCELLED),
        ("ImportReview", ThreePLStatus.ON_HOLD),
        ("Exception", ThreePLStatus.EXCEPTION),
    ],
)
def test_an_order_without_shipments_has_the_orders_own_status(status: str, expected: ThreePLStatus) -> None:
    assert parse_order(order(status=status)).status == expected


def test_unreadable_orders_and_stock_raise() -> None:
    for bad in [
        {"reference_id": "R"},
        {"id": 1},
        {"id": 1, "reference_id": "R", "shipments": ["x"]},
        {"id": 1, "reference_id": "R", "shipments": [{"id": 2, "tracking": "x"}]},
        {"id": 1, "reference_id": "R", "products": [{"reference_id": "A", "quantity": "many"}]},
    ]:
        with pytest.raises(UNREADABLE):
            parse_order(bad)
    for stock in [{"total_on_hand_quantity": 1}, {"sku": "A", "fulfillment_centers": ["x"]}]:
        with pytest.raises(UNREADABLE):
            parse_stock(stock)


@pytest.mark.parametrize(
    ("status", "body", "expected", "detail"),
    [
        (400, {"title": "Bad", "errors": {"ShippingMethod": ["required"]}}, ThreePLError, None),
        (
            400,
            {"errors": {"Recipient.Address.Address1": ["Address not found"]}},
            ThreePLRefused,
            ThreePLDetail.INVALID_ADDRESS,
        ),
        (401, {}, ThreePLError, None),
        (403, {"title": "Forbidden"}, ThreePLError, None),
        (404, {}, ThreePLNotFound, None),
        (408, None, ThreePLTransientError, None),
        (409, {}, ThreePLError, None),
        (422, {"errors": {"reference_id": ["already exists"]}}, ThreePLRefused, None),
        (422, {"errors": {"Products[0].ReferenceId": ["No Sku History"]}}, ThreePLRefused, ThreePLDetail.UNKNOWN_SKU),
        (
            422,
            {"errors": {"Products[0].Quantity": ["No Stock On Hand For Sku"]}},
            ThreePLRefused,
            ThreePLDetail.OUT_OF_STOCK,
        ),
        (429, {"message": "slow down"}, ThreePLTransientError, None),
        (500, None, ThreePLTransientError, None),
        (502, "<html>bad gateway</html>", ThreePLTransientError, None),
        (503, {}, ThreePLTransientError, None),
        (504, {}, ThreePLTransientError, None),
    ],
)
def test_each_answer_of_shipbob_is_the_right_error(
    status: int, body: Any, expected: type[ThreePLError], detail: ThreePLDetail | None
) -> None:
    err = threepl_error("submit order 3pl:ORD-1:1", status, body)
    assert type(err) is expected
    assert err.retryable is (expected is ThreePLTransientError)
    assert err.status == status
    assert str(err).startswith(f"3pl submit order 3pl:ORD-1:1: {status}")
    if isinstance(err, ThreePLRefused):
        assert err.detail == detail
        assert err.reason and err.reason in str(err)


def test_refusals_name_the_field_and_never_the_recipient() -> None:
    echoed = {
        "title": "One or more validation errors occurred.",
        "errors": {
            "Recipient.Address.Address1": ["'77 Xylophone Crescent, Wolverhampton WV1 1AA' was not found"],
            "Recipient.Name": ["Zebedee Quartermaine is on a deny list"],
            "Recipient.Email": ["zebedee@example.com bounced"],
        },
    }
    err = threepl_error("submit order 3pl:ORD-9:1", 422, echoed, private_values(RECIPIENT), retry_after=None)
    message = str(err)
    assert isinstance(err, ThreePLRefused) and err.detail == ThreePLDetail.INVALID_ADDRESS
    assert "Recipient.Address.Address1: '***, *** ***' was not found" in message
    for private in ("Zebedee", "Quartermaine", "Xylophone", "Wolverhampton", "WV1 1AA", "zebedee@example.com"):
        assert private not in message and private not in err.reason
    assert threepl_error("x", 429, {}, retry_after="30").message.endswith("(retry after 30 s)")


def test_the_sandbox_stock_setting_is_sku_units_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_stock_levels(" MUG-RED=40, TEE-L = 0 ,") == {"MUG-RED": 40, "TEE-L": 0}
    assert parse_stock_levels("") == {}
    monkeypatch.setenv("FULFILL_SANDBOX_THREEPL_STOCK", "MUG-RED=4")
    assert parse_stock_levels(Settings().sandbox_threepl_stock) == {"MUG-RED": 4}
    for bad in ("MUG-RED", "MUG-RED=-1", "=4", "MUG-RED=four"):
        monkeypatch.setenv("FULFILL_SANDBOX_THREEPL_STOCK", bad)
        with pytest.raises(ValidationError, match="is not SKU=units"):
            Settings()
