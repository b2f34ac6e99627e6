"""Email through any SMTP relay with aiosmtplib (the sandbox SMTP server by default).

Connections to the relay are kept open and reused: a small pool, opened on demand, each connection carrying
one message at a time. A connection per email cost a connect, EHLO (STARTTLS, AUTH) and QUIT every time, on
both ends. A pooled connection the relay closed meanwhile (its idle timeout, a 421, a reset) is replaced by a
fresh one and the message sent again on it, once; nothing had been sent on the dead one.

Messages are built with the standard library's compat32 `email.mime` classes (MIMEMultipart "alternative"
of a text/plain and a text/html MIMEText, utf-8, quoted-printable so 7-bit clean for any relay; non-ASCII
header text RFC 2047-encoded by `email.header`) and flattened to bytes with a compat32 policy and CRLF line
ends. Not `EmailMessage` with the default policy: its header registry parses every field into objects, several
times the CPU of compat32, which keeps header strings as given and folds them on output (docs/performance.md).
tests/unit/integrations/test_integrations_adapters.py checks that the result parses (default policy) to what was given.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.charset import QP, Charset
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from functools import partial
from pathlib import Path

import aiosmtplib
from aiosmtplib.email import parse_address

from common.config import Settings
from common.integrations import NotificationError
from common.logs import redact

POOL_SIZE = 4  # connections to the relay at most, i.e. emails in flight at once
_FIELD_NAME = re.compile(r"[!-9;-~]+")  # printable ASCII but ':' (RFC 5322 3.6.8)
_WIRE = policy.compat32.clone(linesep="\r\n")  # SMTP's line ends; headers folded at 78 as compat32 does
_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # (its default is base64) readable, and 7-bit clean for any relay


class EmailPermanentError(NotificationError):
    """The relay refused the message for good (5xx: unknown mailbox, policy, auth); do not retry."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EmailTransientError(NotificationError):
    """Connection problems, timeouts and 4xx answers; another attempt may succeed."""

    retryable = True

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EmailSender:
    def __init__(self, settings: Settings, *, timeout: float = 15.0, pool_size: int = POOL_SIZE) -> None:
        self._settings = settings
        self._timeout = timeout
        self._pool_size = pool_size
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self._envelope_from = parseaddr(settings.email_from)[1] or settings.email_from.strip()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[aiosmtplib.SMTP] = []  # open connections no send is using, the most recent last
        self._generation = 0  # bumped by close(): connections opened before are not pooled again
        self._tls_context = _tls_context(settings.smtp_tls_ca_file)

    def build(self, *, to: str, subject: str, text: str, html: str, message_id: str, headers: dict[str, str]) -> bytes:
        """The message as sent: From, To, Subject, Date, Message-ID and `headers` (one of these names replaces
        the field, at the end), then a multipart/alternative of text/plain and text/html in utf-8,
        quoted-printable. Non-ASCII header text is RFC 2047-encoded (in From and To the display name only).
        ValueError for a header name that is not one, or a value with a line break."""
        msg = MIMEMultipart("alternative", _subparts=[_text_part(text, "plain"), _text_part(html, "html")])
        fields = {
            "From": self._settings.email_from,
            "To": to,
            "Subject": subject,
            "Date": format_datetime(datetime.now(UTC)),
            # Deterministic per (order, event, channel): relays and clients can drop a rare duplicate
            "Message-ID": message_id,
        }
        for name, value in [*fields.items(), *headers.items()]:
            if not _FIELD_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if "\r" in value or "\n" in value:  # compat32 writes a bare line break out as it is
                raise ValueError(f"header {name} must not contain line breaks: {value!r}")
            del msg[name]  # an extra header replaces a field of the same name (any case)
            msg[name] = _address(value) if name.lower() in ("from", "to") else value
        for name in ("MIME-Version", "Content-Type"):  # after the fields above, as mail is usually laid out
            value = msg[name]
            del msg[name]
            msg[name] = value
        return msg.as_bytes(policy=_WIRE)

    async def send(
        self, *, to: str, subject: str, text: str, html: str, message_id: str, headers: dict[str, str]
    ) -> str:
        """Sends one multipart/alternative message; returns its Message-ID."""
        s = self._settings
        recipient = parse_address(to)  # ValueError for an address that cannot go on an SMTP command line
        build = partial(
            self.build, to=to, subject=subject, text=text, html=html, message_id=message_id, headers=headers
        )
        # The relay's answers quote the recipient ("550 <bob@x>: no such user"): ours name none, and are not
        # chained to aiosmtplib's errors, whose text (logged and recorded with ours as the cause) keeps it
        try:
            await self._send(recipient, build)
        except aiosmtplib.SMTPRecipientRefused as err:
            detail = f"{err.code} {redact(err.message, to, recipient)}"
            if 500 <= err.code < 600:
                raise EmailPermanentError(f"recipient refused: {detail}", err.code) from None
            raise EmailTransientError(f"recipient deferred: {detail}", err.code) from None
        except aiosmtplib.SMTPResponseException as err:
            detail = f"SMTP {err.code}: {redact(err.message, to, recipient)}"
            if 500 <= err.code < 600:
                raise EmailPermanentError(detail, err.code) from None
            raise EmailTransientError(detail, err.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
            where = f"{s.smtp_host}:{s.smtp_port}"
            raise EmailTransientError(f"SMTP relay {where} unavailable: {redact(str(err), to, recipient)}") from None
        return message_id

    async def close(self) -> None:
        """QUIT the idle connections. One in use now is closed when its send ends; a later send opens anew."""
        self._generation += 1
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._quit(client) for client in idle))

    # -----------------------------------------------------------------------------------------------------

    async def _send(self, recipient: str, build: Callable[[], bytes]) -> None:
        """Send on a pooled connection (or a new one); a dead pooled one is replaced once, before DATA only."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or another event loop (the old one's connections went with it)
            self._loop, self._idle, self._slots = loop, [], asyncio.Semaphore(self._pool_size)
        async with self._slots:
            generation = self._generation
            client = self._take_idle()
            reused = client is not None
            while True:
                if client is None:
                    client = await self._open()
                if await self._attempt(client, recipient, build, reused=reused, generation=generation):
                    return
                # A pooled connection the relay had closed: once more on a fresh one (nothing was sent yet)
                client, reused = None, False

    async def _attempt(
        self, client: aiosmtplib.SMTP, recipient: str, build: Callable[[], bytes], *, reused: bool, generation: int
    ) -> bool:
        """One mail transaction on `client`: True when sent; False when a reused connection proved dead before
        DATA (worth one more try on a fresh one); any other failure is raised."""
        keep, before_data = False, True
        try:
            data = build()
            options, encoding = self._envelope(client, recipient, data)
            await client.mail(self._envelope_from, options=options, encoding=encoding)
            await client.rcpt(recipient, encoding=encoding)
            before_data = False
            await client.data(data)
            keep = True
            return True
        except aiosmtplib.SMTPResponseException as err:
            if err.code != 421 and client.is_connected:
                # The relay's answer (a refused recipient or message), not a dead connection
                keep = await self._reset(client)
                raise
            if not (reused and before_data):
                raise
        except TimeoutError:
            raise  # the relay is slow, not gone: no second wait here (the activity retries)
        except OSError:  # SMTPServerDisconnected, a reset or broken pipe
            if not (reused and before_data):
                raise
        finally:
            self._release(client, keep=keep, generation=generation)
        return False

    def _envelope(self, client: aiosmtplib.SMTP, recipient: str, data: bytes) -> tuple[list[str], str]:
        """MAIL FROM options and the envelope's encoding: SMTPUTF8 only for an internationalized address."""
        options = [f"size={len(data)}"] if client.supports_extension("size") else []
        if (self._envelope_from + recipient).isascii():
            return options, "ascii"
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("the relay does not take internationalized addresses")
        return [*options, "SMTPUTF8"], "utf-8"

    def _release(self, client: aiosmtplib.SMTP, *, keep: bool, generation: int) -> None:
        """Back to the pool if it is sound and no close() came since it was taken; closed otherwise."""
        if keep and generation == self._generation:
            self._idle.append(client)
        else:
            client.close()

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
            client.close()  # the relay closed it while idle, and we saw it
        return None

    async def _open(self) -> aiosmtplib.SMTP:
        s = self._settings
        # Credentials only ever go over an encrypted connection: implicit TLS, or STARTTLS required
        start_tls = not s.smtp_use_tls and (s.smtp_username is not None or s.smtp_starttls)
        client = aiosmtplib.SMTP(
            hostname=s.smtp_host,
            port=s.smtp_port,
            use_tls=s.smtp_use_tls,
            start_tls=False,  # done below, so a relay without it is an error of ours, never a plaintext AUTH
            tls_context=self._tls_context,
            timeout=self._timeout,
        )
        try:
            await client.connect()
            await self._ehlo(client)
            if start_tls:
                if not client.supports_extension("starttls"):
                    raise EmailTransientError(
                        f"SMTP relay {s.smtp_host}:{s.smtp_port} does not offer STARTTLS, and credentials are "
                        "never sent unencrypted (FULFILL_SMTP_USE_TLS=true for a relay that takes implicit TLS)"
                    )
                await client.starttls()
                await self._ehlo(client)  # the extensions before TLS do not count (RFC 3207)
            if s.smtp_username is not None:
                await client.login(s.smtp_username, s.smtp_password or "")
                await self._ehlo(client)
        except BaseException:
            client.close()
            raise
        return client

    @staticmethod
    async def _ehlo(client: aiosmtplib.SMTP) -> None:
        """EHLO (HELO for an old relay) when the session needs one: the extensions (STARTTLS, SIZE, SMTPUTF8)
        shape what follows."""
        if client.is_ehlo_or_helo_needed:
            try:
                await client.ehlo()
            except aiosmtplib.SMTPHeloError:
                await client.helo()

    async def _reset(self, client: aiosmtplib.SMTP) -> bool:
        """RSET after a refused transaction so the connection can carry the next message; False if it cannot."""
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError):
            return False
        return client.is_connected

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            if client.is_connected:
                await client.quit(timeout=min(self._timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError):
            pass
        finally:
            client.close()


def _tls_context(ca_file: Path | None) -> ssl.SSLContext | None:
    """A context trusting a private relay's CA; None: aiosmtplib's default (the system roots). Built when the
    sender is, so a wrong file stops the worker at start rather than failing each email."""
    if ca_file is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise ValueError(f"FULFILL_SMTP_TLS_CA_FILE={ca_file}: not a readable PEM CA file ({reason})") from err


def _text_part(text: str, subtype: str) -> MIMEText:
    # A Charset is taken here since Python 3.5; typeshed has only str
    return MIMEText(text, subtype, _UTF8_QP)  # type: ignore[arg-type]


def _address(value: str) -> str:
    """A From or To value for compat32: a non-ASCII display name RFC 2047-encoded by formataddr (compat32 would
    encode the whole field, address too). An internationalized address (it goes out with SMTPUTF8) stays raw
    UTF-8: given as surrogate-escaped bytes, which a compat32 BytesGenerator writes out unchanged."""
    if value.isascii():
        return value
    display_name, address = parseaddr(value)
    if address and address.isascii():
        return formataddr((display_name, address))
    return value.encode().decode("ascii", "surrogateescape")
