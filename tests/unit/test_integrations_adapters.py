"""Rate choice and address mapping of the carrier adapter, and the email adapter's message shape: what it
writes out parses as what stdlib EmailMessage built before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formatdate

import pytest
from aiosmtplib.email import flatten_message

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


def emailmessage_build(
    from_: str, to: str, subject: str, text: str, html: str, headers: dict[str, str], eight_bit: bool
) -> bytes:
    """How the sender built and aiosmtplib flattened a message before (stdlib EmailMessage, default policy)."""
    msg = EmailMessage()
    msg["From"] = from_
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = "<m@fulfill>"
    for name, value in headers.items():
        del msg[name]
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return flatten_message(msg, cte_type="8bit" if eight_bit else "7bit")


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
    "mostly non-latin (base64)": (
        "\u6ce8\u6587" * 20,
        "\u6ce8\u6587\u304c\u767a\u9001\u3055\u308c\u307e\u3057\u305f" * 10,
        "<p>\u767a\u9001</p>",
    ),
    "long ascii subject (folded)": ("Order ORD-1: " + "please check your delivery address " * 4, "t", "<p>t</p>"),
    "no trailing newline, CRLF inside": ("s", "line 1\r\nline 2", "<p>a</p>\r\n<p>b</p>"),
    "empty bodies": ("s", "", ""),
}


@pytest.mark.parametrize("eight_bit", [True, False], ids=["8BITMIME", "7bit relay"])
@pytest.mark.parametrize("case", list(CASES))
def test_email_wire_matches_what_emailmessage_built(case: str, eight_bit: bool) -> None:
    subject, text, html = CASES[case]
    from_ = "Zo\xeb's Shop <orders@fulfill.example>" if "non-ascii" in case else Settings().email_from
    headers = {"X-Order-Id": "ORD-1", "Reply-To": "help@fulfill.example"}
    sender = EmailSender(Settings(email_from=from_))
    new = sender.build(
        to="ada@example.com",
        subject=subject,
        text=text,
        html=html,
        message_id="<m@fulfill>",
        headers=headers,
        eight_bit=eight_bit,
    )
    old = emailmessage_build(from_, "ada@example.com", subject, text, html, headers, eight_bit)
    if not eight_bit:
        assert new.isascii()
    assert all(len(line) <= 998 for line in new.split(b"\r\n"))
    got, want = parse(new), parse(old)
    assert got.keys() == want.keys()
    for name in ("From", "To", "Subject", "Message-ID", "X-Order-Id", "Reply-To", "MIME-Version"):
        assert str(got[name]) == str(want[name])
    assert got.get_content_type() == want.get_content_type() == "multipart/alternative"
    for got_part, want_part in zip(got.iter_parts(), want.iter_parts(), strict=True):
        assert isinstance(got_part, EmailMessage) and isinstance(want_part, EmailMessage)
        assert got_part.get_content_type() == want_part.get_content_type()
        assert got_part["Content-Transfer-Encoding"] == want_part["Content-Transfer-Encoding"]
        assert got_part.get_content_charset() == "utf-8"
        assert got_part.get_content() == want_part.get_content()


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
