"""The carrier adapter's reading of the easypost SDK: each of its error classes (as the SDK raises them, with
EasyPost's error body) becomes the error the activities act on, and EasyPost's objects become our views."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from easypost import errors as ep

from common.integrations.carrier import (
    Carrier,
    CarrierAddressError,
    CarrierAlreadyPurchasedError,
    CarrierClient,
    CarrierError,
    CarrierNotFoundError,
    CarrierTransientError,
    carrier_error,
    parse_shipment,
    parse_tracker,
)
from common.models import TrackingStatus


def api_error(cls: type[ep.ApiError], status: int | None, code: str | None = None, **error: object) -> ep.ApiError:
    """The error as the SDK's requestor raises it: the class of the status, the body it got."""
    body = json.dumps({"error": {"code": code, "message": "refused", "errors": [], **error}}) if code else None
    return cls(message="refused", http_status=status, http_body=body)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (api_error(ep.BadRequestError, 400, "BAD_REQUEST"), CarrierError),
        (api_error(ep.UnauthorizedError, 401, "APIKEY.INACTIVE"), CarrierError),
        (api_error(ep.PaymentError, 402, "PAYMENT.REQUIRED"), CarrierError),
        (api_error(ep.ForbiddenError, 403, "FORBIDDEN"), CarrierError),
        (api_error(ep.NotFoundError, 404, "NOT_FOUND"), CarrierNotFoundError),
        (api_error(ep.MethodNotAllowedError, 405, "METHOD.NOT_ALLOWED"), CarrierError),
        (api_error(ep.TimeoutError, 408, "TIMEOUT"), CarrierTransientError),
        (api_error(ep.InvalidRequestError, 422, "SHIPMENT.INVALID_PARAMS"), CarrierError),
        (api_error(ep.InvalidRequestError, 422, "SHIPMENT.POSTAGE.EXISTS"), CarrierAlreadyPurchasedError),
        (api_error(ep.RateLimitError, 429, "RATE_LIMITED"), CarrierTransientError),
        (api_error(ep.InternalServerError, 500, "INTERNAL_SERVER_ERROR"), CarrierTransientError),
        (api_error(ep.UnknownApiError, 502, "BAD_GATEWAY"), CarrierTransientError),
        (api_error(ep.ServiceUnavailableError, 503, "SERVICE.UNAVAILABLE"), CarrierTransientError),
        (api_error(ep.GatewayTimeoutError, 504, "GATEWAY_TIMEOUT"), CarrierTransientError),
        (api_error(ep.UnknownApiError, 418, "TEAPOT"), CarrierError),
        # Raised without an HTTP answer: a timed-out read, a refused connection, a body that is not JSON
        (ep.TimeoutError("Request timed out."), CarrierTransientError),
        (ep.HttpError("Unexpected error communicating with EasyPost. Original error: refused"), CarrierTransientError),
        (ep.JsonError("Invalid response from API: (<html>) 502"), CarrierTransientError),
        (ep.RedirectError(message="moved", http_status=301), CarrierError),
        (ep.FilteringError("No rates found."), CarrierError),
    ],
)
def test_each_sdk_error_class_is_the_right_carrier_error(err: ep.EasyPostError, expected: type[CarrierError]) -> None:
    mapped = carrier_error("buy shipment shp_1", err)
    assert type(mapped) is expected
    assert mapped.retryable is (expected is CarrierTransientError)
    assert mapped.status == getattr(err, "http_status", None)
    assert str(mapped).startswith("carrier buy shipment shp_1: ")


def test_an_address_failure_names_our_field_and_not_the_address() -> None:
    errors = [{"field": "zip", "message": "Invalid postal code", "suggestion": None}, {"field": "street1"}]
    err = api_error(ep.InvalidRequestError, 422, "ADDRESS.VERIFY.FAILURE", errors=errors)
    mapped = carrier_error("create shipment label:ORD-1:1", err)
    assert isinstance(mapped, CarrierAddressError) and not mapped.retryable
    assert (mapped.field, mapped.code, mapped.status) == ("postal_code", "ADDRESS.VERIFY.FAILURE", 422)
    assert str(mapped) == (
        "carrier create shipment label:ORD-1:1: 422 ADDRESS.VERIFY.FAILURE: refused "
        "(zip: Invalid postal code; street1: )"
    )
    unnamed = carrier_error("x", api_error(ep.InvalidRequestError, 422, "ADDRESS.VERIFY.FAILURE"))
    assert isinstance(unnamed, CarrierAddressError) and unnamed.field is None


def test_easypost_objects_become_views() -> None:
    tracker = {
        "id": "trk_1",
        "object": "Tracker",
        "tracking_code": "EZ1",
        "carrier": "USPS",
        "status": "in_transit",
        "status_detail": "arrived_at_facility",
        "est_delivery_date": "2030-01-05T00:00:00Z",
        "shipment_id": "shp_1",
        "public_url": "https://track.example/EZ1",
        "tracking_details": [
            {"status": "pre_transit", "message": "Label created", "datetime": "2030-01-01T10:00:00Z"},
            {
                "status": "some_new_status",
                "message": "Arrived",
                "datetime": "2030-01-02T10:00:00Z",
                "tracking_location": {"city": "Leeds", "country": "GB"},
            },
        ],
    }
    view = parse_tracker(tracker)
    assert (view.status, view.est_delivery_date) == (TrackingStatus.IN_TRANSIT, datetime(2030, 1, 5, tzinfo=UTC))
    assert [d.status for d in view.tracking_details] == [TrackingStatus.PRE_TRANSIT, TrackingStatus.UNKNOWN]
    assert (view.message, view.tracking_details[1].city, view.shipment_id) == ("Arrived", "Leeds", "shp_1")

    rate = {"id": "rate_1", "carrier": "USPS", "service": "Priority", "rate": "7.575", "currency": "USD"}
    shipment = parse_shipment(
        {
            "id": "shp_1",
            "is_return": True,
            "rates": [
                {**rate, "delivery_days": None, "est_delivery_days": 2, "delivery_date": "2030-01-03T00:00:00Z"},
                {**rate, "id": "rate_2", "rate": "12", "delivery_date": None, "delivery_date_guaranteed": True},
            ],
            "selected_rate": rate,
            "postage_label": {"label_url": "https://labels.example/1.png"},
            "tracking_code": "EZ1",
            "tracker": tracker,
            "refund_status": None,
        }
    )
    first, second = shipment.rates
    assert (first.rate_cents, first.delivery_days, first.delivery_date) == (758, 2, datetime(2030, 1, 3, tzinfo=UTC))
    assert (second.rate_cents, second.delivery_days, second.delivery_date, second.delivery_date_guaranteed) == (
        1200,
        None,
        None,
        True,
    )
    assert shipment.is_return and shipment.label_url == "https://labels.example/1.png"
    assert shipment.tracking_url == "https://track.example/EZ1" and shipment.tracker == view


def test_the_adapter_is_a_carrier() -> None:
    """The activities take any `Carrier`: EasyPost's adapter is one (checked by mypy too, where it is used)."""
    methods = [m for m in dir(Carrier) if not m.startswith("_")]
    assert methods == sorted(
        [
            "buy",
            "close",
            "create_shipment",
            "create_tracker",
            "get_shipment",
            "get_tracker",
            "get_tracker_by_id",
            "refund",
        ]
    )
    assert all(callable(getattr(CarrierClient, m)) for m in methods)


def test_a_carrier_message_quoting_the_address_it_was_sent_keeps_it_out() -> None:
    errors = [{"field": "street1", "message": "Address not found: 742 EVERGREEN terrace, Springfield"}]
    err = api_error(ep.InvalidRequestError, 422, "ADDRESS.VERIFY.FAILURE", errors=errors)
    mapped = carrier_error("create shipment label:ORD-1:1", err, ["742 Evergreen Terrace", "Springfield"])
    assert str(mapped).endswith("(street1: Address not found: ***, ***)")
    assert mapped.field == "line1"
