"""Sandbox SMTP server: aiosmtpd's SMTP protocol served from the current event loop, keeping every message.

Recipients in the reserved `.invalid` top-level domain (RFC 2606), and addresses tagged `+bounce` (which a
customer's order can carry, unlike `.invalid`), are refused with 550, quoting the address as real relays do,
so the permanent failure path of the email adapter can be exercised against a real server. During an outage
(outages.py) the server answers as a relay in trouble does: 421 instead of the greeting on a new connection, and
421 to the next MAIL, RCPT or DATA on an open one, closing the connection after it (RFC 5321 4.2.2).
"""

from __future__ import annotations

import asyncio
import logging
import re
from email import policy
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from sandbox.outages import Outages
from sandbox.store import SandboxStore

log = logging.getLogger("fulfill.sandbox.smtp")

UNAVAILABLE = "421 4.3.2 sandbox.fulfill Service not available, closing transmission channel (sandbox outage)"


class OutboxHandler:
    """aiosmtpd handler: stores each accepted message as one outbox row."""

    def __init__(self, store: SandboxStore, outages: Outages | None = None) -> None:
        self._store = store
        self._outages = outages if outages is not None else Outages()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self._outages.active("smtp"):
            return UNAVAILABLE
        # What aiosmtpd does without this hook
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self._outages.active("smtp"):
            return UNAVAILABLE
        lowered = address.lower().rstrip(">")
        if lowered.endswith(".invalid") or "+bounce@" in lowered:
            return f"550 5.1.1 <{address}>: Recipient address rejected: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self._outages.active("smtp"):
            return UNAVAILABLE
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        # The compat32 policy: the default policy's header registry parses every header into objects, most of
        # this server's CPU. Only a few headers are read here, decoded as the registry would; the EmailMessage
        # class still finds the bodies (get_body).
        msg = BytesParser(EmailMessage, policy=policy.compat32).parsebytes(raw)
        assert isinstance(msg, EmailMessage)
        text_part = msg.get_body(preferencelist=("plain",))
        saved = self._store.add_message(
            channel="email",
            sender=_header(msg, "From") or envelope.mail_from or "",
            recipient=", ".join(envelope.rcpt_tos),
            subject=_header(msg, "Subject"),
            body=_text(text_part) if text_part is not None else "",
            html=msg.get_body(preferencelist=("html",)) is not None,
            order_id=_header(msg, "X-Order-Id"),
            provider_id=_header(msg, "Message-ID"),
        )
        # Not the recipient or subject: customers' addresses and names stay out of the logs
        log.info("email #%d accepted (order %s)", saved.id, saved.order_id)
        return "250 2.0.0 Message accepted for delivery"


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _header(msg: Message, name: str) -> str | None:
    """A header's value unfolded, RFC 2047 encoded words decoded (what `str()` of the default policy's
    header gives); None if absent."""
    value = msg.get(name)
    if value is None:
        return None
    value = _FOLD.sub("", str(value))
    if "=?" in value:
        try:
            value = str(make_header(decode_header(value)))
        except (LookupError, ValueError, HeaderParseError):  # unknown charset, broken encoded word: keep as sent
            pass
    return value


def _text(part: Message) -> str:
    """A text part's content, transfer encoding undone, decoded with its charset (ASCII if none given)."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset("ascii")
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        return payload.decode("utf-8", errors="replace")


class _SandboxSMTP(SMTP):
    async def push(self, status: Any) -> None:
        await super().push(status)
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if text.startswith("421") and self.transport is not None:
            self.transport.close()  # 421 means the server closes the channel: it does


class _Unavailable(asyncio.Protocol):
    """A connection accepted during an outage: 421 instead of the 220 greeting, then closed."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(UNAVAILABLE.encode() + b"\r\n")
        transport.close()


class SandboxSmtpServer:
    def __init__(
        self,
        store: SandboxStore,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        outages: Outages | None = None,
    ) -> None:
        self._outages = outages if outages is not None else Outages()
        self._handler = OutboxHandler(store, self._outages)
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._server: asyncio.Server | None = None
        self._protocols: set[SMTP] = set()
        self.port = port

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self._username
            and auth_data.password.decode() == (self._password or "")
        )
        return AuthResult(success=ok)

    def _protocol(self) -> asyncio.Protocol:
        if self._outages.active("smtp"):
            return _Unavailable()
        loop = asyncio.get_running_loop()
        auth: dict[str, Any] = {}
        if self._username:
            # The sandbox has no certificate, so AUTH is offered in clear text (local use only).
            auth = {"authenticator": self._authenticate, "auth_require_tls": False, "auth_required": True}
        proto = _SandboxSMTP(self._handler, hostname="sandbox.fulfill", enable_SMTPUTF8=True, loop=loop, **auth)
        # Forget finished connections (transport reset on connection_lost) so the set stays small.
        self._protocols = {p for p in self._protocols if p.transport is not None}
        self._protocols.add(proto)
        return proto

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self._host, self._port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Idle client connections would otherwise outlive the server.
        for proto in self._protocols:
            if proto.transport is not None:
                proto.transport.close()
        self._protocols.clear()
        await self._server.wait_closed()
        self._server = None
