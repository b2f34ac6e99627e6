"""Rate choice and address mapping of the carrier adapter, and the email adapter's message shape: what it
writes out parses (stdlib parser, default policy) to the fields and contents it was given."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr

import pytest

from common.config import Settings
from common.integrations.carrier import CarrierError, CarrierRate, to_carrier_address
from common.integrations.email import EmailSender
from common.models import Address
from common.shipping.rate_shopping import choose

TODAY = date(2026, 12, 1)


def choose_rate(rates: list[CarrierRate], max_days: int, label_day: date | None = None) -> CarrierRate:
    """The rate for a parcel promised `max_days` after the label day (default: today, in UTC, as the sandbox
    carrier dates its rates)."""
    day = label_day or datetime.now(UTC).date()
    return choose(rates, promised=day + timedelta(days=max_days), label_day=day).rate


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


def parse(raw: bytes) -> EmailMessage:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    return msg


def test_email_is_multipart_alternative_with_given_ids() -> None:
    msg = parse(
        EmailSender(Settings()).build(
            to="ada@example.com",
            subject="Shipped",
            text="plain",
            html="<p>html</p>",
            message_id="<notify.ORD-1.shipped.email@fulfill>",
            headers={"X-Order-Id": "ORD-1"},
        )
    )
    assert msg.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg["Message-ID"] == "<notify.ORD-1.shipped.email@fulfill>"
    assert msg["X-Order-Id"] == "ORD-1"
    assert msg["From"] == Settings().email_from
    sent = msg["Date"].datetime
    assert sent.utcoffset() == timedelta(0) and abs(sent - datetime.now(UTC)) < timedelta(minutes=1)


LONG = "Order ORD-000123 is on its way with SandboxPost. Tracking number SBX123: http://127.0.0.1:8027/t/SBX123"
CASES = {
    "ascii, short lines": ("Order ORD-1 confirmed", "Hello Ada,\n\nThanks!\n", "<p>Thanks!</p>"),
    "ascii, long lines (a rendered notification)": (
        "Order ORD-1 has shipped",
        f"Hello Ada,\n\n{LONG}\n",
        f"<p>{LONG}</p>",
    ),
    "non-ascii, short lines": ("Bestellung \u2013 \xc4\xd6\xdc \u2713", "Gr\xfc\xdfe, Zo\xeb\n", "<p>\u2713</p>"),
    "non-ascii, long lines": ("Zo\xeb", "Gr\xfc\xdfe " * 30 + "\n" + "x\n" * 12, "<p>" + "\xe9" * 200 + "</p>"),
    "mostly non-latin": (
        "\u6ce8\u6587" * 20,
        "\u6ce8\u6587\u304c\u767a\u9001\u3055\u308c\u307e\u3057\u305f" * 10,
        "<p>\u767a\u9001</p>",
    ),
    "long ascii subject (folded)": ("Order ORD-1: " + "please check your delivery address " * 4, "t", "<p>t</p>"),
    "no trailing newline, CRLF inside": ("s", "line 1\r\nline 2", "<p>a</p>\r\n<p>b</p>"),
    "empty bodies": ("s", "", ""),
    "mbox and QP specials": ("100% = done", "From here\n.\na = b \nend\t\n", "<p style=x>=</p>"),
}


def addresses(msg: EmailMessage, name: str) -> list[tuple[str, str]]:
    return [(a.display_name, a.addr_spec) for a in msg[name].addresses]


def lines(text: str) -> str:
    """Line ends as a text part's content reads back: the message carries CRLF, whatever the input had."""
    return text.replace("\r\n", "\n")


@pytest.mark.parametrize("case", list(CASES))
def test_email_parses_to_the_fields_and_contents_given(case: str) -> None:
    subject, text, html = CASES[case]
    from_ = "Zo\xeb's Shop <orders@fulfill.example>" if "non-ascii" in case else Settings().email_from
    to = "Ad\xe1 L\xf6velace <ada@example.com>" if "non-ascii" in case else "ada@example.com"
    headers = {"X-Order-Id": "ORD-1", "Reply-To": "help@fulfill.example"}
    raw = EmailSender(Settings(email_from=from_)).build(
        to=to, subject=subject, text=text, html=html, message_id="<m@fulfill>", headers=headers
    )
    assert raw.isascii()  # 7-bit clean: no 8BITMIME needed
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    msg = parse(raw)
    assert not msg.defects
    assert msg.keys() == "From To Subject Date Message-ID X-Order-Id Reply-To MIME-Version Content-Type".split()
    assert addresses(msg, "From") == [parseaddr(from_)]
    assert addresses(msg, "To") == [parseaddr(to)]
    assert str(msg["Subject"]) == subject
    assert msg["Message-ID"] == "<m@fulfill>"
    assert msg["X-Order-Id"] == "ORD-1"
    assert msg["Reply-To"] == "help@fulfill.example"
    sent = msg["Date"].datetime
    assert sent.utcoffset() == timedelta(0) and abs(sent - datetime.now(UTC)) < timedelta(minutes=1)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    for part, given in zip(parts, (text, html), strict=True):
        assert isinstance(part, EmailMessage)
        assert part.get_content_charset() == "utf-8"
        assert lines(part.get_content()) == lines(given)


def test_email_internationalized_address_is_written_as_utf8() -> None:
    """An address that is not ASCII goes out with SMTPUTF8 (RFC 6532): raw UTF-8 in the field, not RFC 2047."""
    to = "Zo\xeb <zo\xeb@example.com>"
    raw = EmailSender(Settings()).build(to=to, subject="s", text="t", html="h", message_id="<m@x>", headers={})
    assert f"\r\nTo: {to}\r\n".encode() in raw
    assert str(parse(raw)["To"]) == to


def test_email_header_replaced_by_an_extra_header_and_line_breaks_refused() -> None:
    sender = EmailSender(Settings())
    msg = parse(
        sender.build(to="a@example.com", subject="s", text="t", html="h", message_id="<m@x>", headers={"subject": "S2"})
    )
    assert msg.get_all("Subject") == ["S2"]
    assert msg.keys()[:5] == ["From", "To", "Date", "Message-ID", "subject"]
    for headers in ({"X-Order-Id": "ORD-1\r\nBcc: eve@example.com"}, {"Bad Name": "x"}):
        with pytest.raises(ValueError):
            sender.build(to="a@example.com", subject="s", text="t", html="h", message_id="<m@x>", headers=headers)
    with pytest.raises(ValueError):
        sender.build(
            to="a@example.com", subject="s\nBcc: eve@example.com", text="t", html="h", message_id="<m@x>", headers={}
        )
