"""The sandbox SMTP handler's cheap (compat32) parsing stores what the default-policy parser stored before."""

from __future__ import annotations

from email import policy
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.utils import formatdate
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope
from aiosmtplib.email import flatten_message

from sandbox.smtp import OutboxHandler
from sandbox.store import SandboxStore


def reference_fields(raw: bytes, mail_from: str) -> dict[str, Any]:
    """What handle_DATA stored when it parsed with BytesParser(policy=policy.default)."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    text_part = msg.get_body(preferencelist=("plain",))
    html_part = msg.get_body(preferencelist=("html",))
    return {
        "sender": str(msg.get("From") or mail_from or ""),
        "subject": str(msg["Subject"]) if msg["Subject"] is not None else None,
        "body": text_part.get_content() if isinstance(text_part, EmailMessage) else "",
        "html": html_part is not None,
        "order_id": str(msg["X-Order-Id"]) if msg["X-Order-Id"] is not None else None,
        "provider_id": str(msg["Message-ID"]) if msg["Message-ID"] is not None else None,
    }


async def stored_fields(raw: bytes, mail_from: str) -> dict[str, Any]:
    store = SandboxStore(":memory:")
    try:
        envelope = Envelope()
        envelope.mail_from = mail_from
        envelope.rcpt_tos = ["ada@example.com"]
        envelope.original_content = raw
        envelope.content = raw
        reply = await OutboxHandler(store).handle_DATA(None, None, envelope)  # type: ignore[arg-type]
        assert reply.startswith("250 ")
        [saved] = store.messages()
        return saved.model_dump(include={"sender", "subject", "body", "html", "order_id", "provider_id"})
    finally:
        store.close()


def old_worker_message(
    subject: str, text: str, html: str, sender: str = "Fulfillment <orders@fulfill.example>"
) -> bytes:
    """A message as the worker built it before (EmailMessage, default policy, flattened by aiosmtplib)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "ada@example.com"
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = "<notify.ORD-1.shipped.email@fulfill>"
    msg["X-Order-Id"] = "ORD-1"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return flatten_message(msg)


def mixed_with_attachment() -> bytes:
    msg = MIMEMultipart("mixed")
    msg["From"] = "ops@example.com"
    msg["Subject"] = "=?iso-8859-1?q?R=E9sum=E9?= attached"
    inner = MIMEMultipart("alternative")
    inner.attach(MIMEText("caf\xe9 au lait\n", "plain", "iso-8859-1"))
    inner.attach(MIMEText("<p>caf\xe9</p>", "html", "utf-8"))
    msg.attach(inner)
    note = MIMEText("not the body\n", "plain", "utf-8")
    note.add_header("Content-Disposition", "attachment", filename="note.txt")
    msg.attach(note)
    msg.attach(MIMEApplication(b"\x00\x01", Name="x.bin"))
    return msg.as_bytes()


def related() -> bytes:
    msg = MIMEMultipart("related")
    msg["Subject"] = "A long subject line that the sender folded over more than one line, as long headers are"
    msg.attach(MIMEText("<p>root</p>", "html", "utf-8"))
    msg.attach(MIMEText("second", "plain", "utf-8"))
    return msg.as_bytes()


MESSAGES = {
    "ascii": old_worker_message("Order ORD-1 has shipped", "Tracking: SBX1\n", "<p>Tracking: <b>SBX1</b></p>"),
    "non-ascii, long lines": old_worker_message(
        "Ihre Bestellung wurde versandt \u2013 \xc4\xd6\xdc \u2713 " + "lang " * 20,
        "Gr\xfc\xdfe, Zo\xeb\n" + "x\xe9" * 80 + "\n",
        "<p>Gr\xfc\xdfe \u2713</p>" * 30,
        sender="Zo\xeb's Shop <orders@fulfill.example>",
    ),
    "plain text only": (
        b"From: a@example.com\r\nSubject: hi\r\nX-Order-Id: ORD-7\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + "na\xefve\r\n".encode()
    ),
    "no headers at all": b"just a body\r\n",
    "mixed with attachments": mixed_with_attachment(),
    "related": related(),
    "unknown charset": (
        b"Subject: =?x-nonsense?q?abc?=\r\nContent-Type: text/plain; charset=x-nonsense\r\n\r\nbody\r\n"
    ),
}


@pytest.mark.parametrize("name", list(MESSAGES))
async def test_stores_what_the_default_policy_parser_stored(name: str) -> None:
    raw = MESSAGES[name]
    if name == "unknown charset":
        # The default policy raised LookupError here (the client got an error reply); now the message is kept.
        fields = await stored_fields(raw, "x@example.com")
        assert (fields["subject"], fields["body"]) == ("=?x-nonsense?q?abc?=", "body\r\n")
        return
    assert await stored_fields(raw, "bounce@example.com") == reference_fields(raw, "bounce@example.com")
