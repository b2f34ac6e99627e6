"""The intake contract: every bad order is refused with the field that is wrong."""

from __future__ import annotations

import pytest

from common.errors import InvalidOrder
from common.intake import parse_order
from tests.orders import order_dict


def problems(data: object) -> str:
    with pytest.raises(InvalidOrder) as info:
        parse_order(data)  # type: ignore[arg-type]
    return " | ".join(info.value.problems)


def test_valid_order_parses() -> None:
    order = parse_order(order_dict())
    assert order.workflow_id == "order-ORD-1001"
    assert order.lines[0].quantity == 2


def test_malformed_json_names_the_position() -> None:
    assert "malformed JSON" in problems('{"order_id": "X",')


def test_json_that_is_not_an_object() -> None:
    assert "JSON object" in problems("[1, 2]")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"order_id": None}, "order_id"),
        ({"order_id": ""}, "order_id"),
        ({"lines": []}, "lines"),
        ({"lines": [{"sku": "MUG-RED", "quantity": 0}]}, "lines.0.quantity"),
        ({"lines": [{"sku": "MUG-RED", "quantity": -3}]}, "lines.0.quantity"),
        ({"lines": [{"sku": "MUG-RED", "quantity": 1.5}]}, "lines.0.quantity"),
        (
            {"lines": [{"sku": "MUG-RED", "quantity": 1}, {"sku": "MUG-RED", "quantity": 2}]},
            "repeated: MUG-RED",
        ),
        ({"shipping_speed": "teleport"}, "shipping_speed"),
        ({"order_id": "has spaces"}, "order_id"),
        ({"surprise": 1}, "surprise: unknown field"),
    ],
)
def test_bad_fields_are_named(change: dict, expected: str) -> None:
    data = order_dict()
    data.update(change)
    assert expected in problems(data)


def test_missing_order_id_says_required() -> None:
    data = order_dict()
    del data["order_id"]
    assert "order_id: required field is missing" in problems(data)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("email", "ada-at-example", "customer.email"),
        ("phone", "555-0100", "E.164"),
        ("phone", "+0123", "E.164"),
        ("channels", ["email", "pigeon"], "customer.channels.1"),
        ("channels", [], "customer.channels"),
        ("name", "", "customer.name"),
    ],
)
def test_bad_customer_fields(field: str, value: object, expected: str) -> None:
    data = order_dict()
    data["customer"][field] = value
    assert expected in problems(data)


def test_sms_channel_needs_a_phone() -> None:
    data = order_dict()
    data["customer"]["phone"] = None
    assert "sms" in problems(data)


@pytest.mark.parametrize(("field", "value"), [("country", "Britain"), ("postal_code", ""), ("line1", "  ")])
def test_bad_address_fields(field: str, value: str) -> None:
    data = order_dict()
    data["ship_to"][field] = value
    assert f"ship_to.{field}" in problems(data)
