"""Rate choice and address mapping of the carrier adapter, and the email adapter's message shape."""

from __future__ import annotations

import pytest

from common.config import Settings
from common.integrations.carrier import CarrierError, CarrierRate, choose_rate, to_carrier_address
from common.integrations.email import EmailSender
from common.models import Address


def rate(rid: str, cents: int, days: int | None) -> CarrierRate:
    return CarrierRate(id=rid, carrier="C", service=rid, rate_cents=cents, delivery_days=days)


RATES = [rate("ground", 510, 5), rate("priority", 980, 2), rate("saver", 790, 3), rate("overnight", 2450, 1)]


@pytest.mark.parametrize(
    ("max_days", "chosen"), [(7, "ground"), (5, "ground"), (3, "saver"), (2, "priority"), (1, "overnight")]
)
def test_cheapest_rate_meeting_the_speed(max_days: int, chosen: str) -> None:
    assert choose_rate(RATES, max_days).id == chosen


def test_fastest_rate_when_none_meets_the_speed() -> None:
    slow = [rate("a", 300, 6), rate("b", 900, 4), rate("c", 100, None)]
    assert choose_rate(slow, 1).id == "b"


def test_no_rates_is_an_error() -> None:
    with pytest.raises(CarrierError):
        choose_rate([], 3)


def test_address_fields_map_to_carrier_names() -> None:
    address = Address(
        name="Ada",
        line1="1 Way",
        line2="Flat 2",
        city="London",
        region="LDN",
        postal_code="N1 9GU",
        country="GB",
    )
    assert to_carrier_address(address) == {
        "name": "Ada",
        "street1": "1 Way",
        "street2": "Flat 2",
        "city": "London",
        "state": "LDN",
        "zip": "N1 9GU",
        "country": "GB",
    }
    assert "street2" not in to_carrier_address(address.model_copy(update={"line2": None}))


def test_email_is_multipart_alternative_with_given_ids() -> None:
    msg = EmailSender(Settings()).build(
        to="ada@example.com",
        subject="Shipped",
        text="plain",
        html="<p>html</p>",
        message_id="<notify.ORD-1.shipped.email@fulfill>",
        headers={"X-Order-Id": "ORD-1"},
    )
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Message-ID"] == "<notify.ORD-1.shipped.email@fulfill>"
    assert msg["X-Order-Id"] == "ORD-1"
    assert msg["From"] == Settings().email_from
